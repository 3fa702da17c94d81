package main

import (
	"errors"
	"fmt"

	"github.com/agentd/agentd/agentd/api"
)

// reword gives an error of agentd hctl's own advice. agentd's messages
// name no flag of hctl's; its Reason says what is wrong, and hctl says
// which flag or command mends it.
func reword(err error) error {
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Reason == "" {
		return err
	}
	msg := ae.Message
	if m, ok := canaryWording(ae); ok {
		msg = m
	}
	switch ae.Reason {
	case api.ReasonNoSuchApp:
		msg += " (see hctl apps)"
	case api.ReasonNoSuchRelease:
		msg += fmt.Sprintf(" (see hctl releases %s)", ae.App)
	case api.ReasonNeedsSocket:
		msg = fmt.Sprintf("app %s: at least one --socket [TYPE/]NAME=ADDR is needed", ae.App)
	case api.ReasonNeedsUser:
		msg = fmt.Sprintf("app %s would run as root: give it a user to run as with --user USER "+
			"(a dedicated one, e.g. created with useradd --system %s), or consent to root with --allow-root", ae.App, ae.App)
	case api.ReasonUserIsRoot:
		msg += " (--allow-root)"
	case api.ReasonBroken:
		msg += fmt.Sprintf(" (hctl apps repair %s rebuilds it from its running processes; hctl status %s says more)", ae.App, ae.App)
	case api.ReasonProbeNotAccepted:
		msg += fmt.Sprintf("; hctl apps set %s --readiness TYPE=notify changes a type's readiness", ae.App)
	case api.ReasonConfirm:
		msg = fmt.Sprintf("destroying %s stops it and deletes its releases: confirm with --confirm %s", ae.App, ae.App)
	}
	return &api.Error{Message: msg, Code: ae.Code, Reason: ae.Reason, App: ae.App}
}
