package main

import (
	"context"
	"strings"

	"github.com/urfave/cli/v3"
)

// docTreeCommand is hidden: `hctl _doc-tree` prints the command tree (names,
// usage, descriptions, flags) as JSON. packaging/mangen renders hctl(1) from
// it, so the man page is made from the same definitions as --help.
func (h *hctl) docTreeCommand() *cli.Command {
	return &cli.Command{
		Name:      "_doc-tree",
		Usage:     "print the command tree as JSON (for the man page generator)",
		UsageText: "hctl _doc-tree",
		Description: "Examples:\n" +
			"  hctl _doc-tree | go run ./packaging/mangen hctl > hctl.1",
		Hidden: true,
		Action: func(_ context.Context, cmd *cli.Command) error {
			h.writeJSON(docTree(cmd.Root()))
			return nil
		},
	}
}

// DocCommand is one command of the tree _doc-tree prints.
type DocCommand struct {
	Name        string       `json:"name"`
	Aliases     []string     `json:"aliases,omitempty"`
	Usage       string       `json:"usage,omitempty"`
	UsageText   string       `json:"usage_text,omitempty"`
	ArgsUsage   string       `json:"args_usage,omitempty"`
	Description string       `json:"description,omitempty"`
	Version     string       `json:"version,omitempty"`
	Flags       []DocFlag    `json:"flags,omitempty"`
	Commands    []DocCommand `json:"commands,omitempty"`
}

// DocFlag is one visible flag of a DocCommand.
type DocFlag struct {
	Names       []string `json:"names"`
	Placeholder string   `json:"placeholder,omitempty"` // the `WORD` of the usage
	Usage       string   `json:"usage,omitempty"`       // backquotes removed
	TakesValue  bool     `json:"takes_value,omitempty"`
	Repeatable  bool     `json:"repeatable,omitempty"`
	Default     string   `json:"default,omitempty"`
	EnvVars     []string `json:"env_vars,omitempty"`
}

func docTree(c *cli.Command) DocCommand {
	d := DocCommand{
		Name: c.Name, Aliases: c.Aliases, Usage: c.Usage, UsageText: c.UsageText,
		ArgsUsage: c.ArgsUsage, Description: c.Description, Version: c.Version,
	}
	for _, f := range c.Flags {
		if v, ok := f.(cli.VisibleFlag); ok && !v.IsVisible() {
			continue
		}
		df := DocFlag{Names: f.Names()}
		if g, ok := f.(cli.DocGenerationFlag); ok {
			df.Placeholder, df.Usage = splitPlaceholder(g.GetUsage())
			df.TakesValue = g.TakesValue()
			df.EnvVars = g.GetEnvVars()
			if df.TakesValue && g.IsDefaultVisible() {
				df.Default = g.GetDefaultText()
				if df.Default == "" {
					df.Default = g.GetValue()
				}
			}
		}
		if m, ok := f.(cli.DocGenerationMultiValueFlag); ok {
			df.Repeatable = m.IsMultiValueFlag()
		}
		d.Flags = append(d.Flags, df)
	}
	for _, sub := range c.Commands {
		if sub.Hidden || sub.Name == "help" {
			continue
		}
		d.Commands = append(d.Commands, docTree(sub))
	}
	return d
}

// splitPlaceholder returns the first `quoted` word of a flag's usage, as
// help output shows it, and the usage without the backquotes.
func splitPlaceholder(usage string) (placeholder, text string) {
	i := strings.IndexByte(usage, '`')
	if i < 0 {
		return "", usage
	}
	j := strings.IndexByte(usage[i+1:], '`')
	if j < 0 {
		return "", usage
	}
	placeholder = usage[i+1 : i+1+j]
	return placeholder, usage[:i] + placeholder + usage[i+1+j+1:]
}
