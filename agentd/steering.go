package main

import (
	"os"

	"github.com/agentd/agentd/agentd/internal/agent"
	"github.com/agentd/agentd/agentd/internal/steer"
)

// steerer makes the core's steering groups with package steer.
type steerer struct{}

func (steerer) New(name string) (agent.SteerGroup, error) {
	g, err := steer.New(name)
	if err != nil {
		return nil, err
	}
	return group{g}, nil
}

func (steerer) Open(files map[string]*os.File) (agent.SteerGroup, error) {
	g, err := steer.Open(steer.Files{Prog: files["prog"], Socks: files["socks"], Routes: files["routes"], Counts: files["counts"]})
	if err != nil {
		return nil, err
	}
	return group{g}, nil
}

func (steerer) Find(cookie uint64) (agent.SteerGroup, error) {
	g, err := steer.Find(cookie)
	if err != nil {
		return nil, err
	}
	return group{g}, nil
}

type group struct{ *steer.Group }

func (g group) Files() (map[string]*os.File, error) {
	fs, err := g.Group.Files()
	if err != nil {
		return nil, err
	}
	return fs.Names(), nil
}
