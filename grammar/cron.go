package grammar

import "errors"

// FieldCron is the per-host cron setting of an app (docs/cron.md).
const FieldCron Field = "cron setting"

// ErrBadCronSetting: the cron setting is neither on nor off.
var ErrBadCronSetting = errors.New("bad cron setting")

// ParseCronSetting reads an app's cron setting, "on" (this host runs the
// app's cron jobs, the default) or "off" (a fleet's other hosts).
func ParseCronSetting(s string) (on bool, err error) {
	switch s {
	case "on":
		return true, nil
	case "off":
		return false, nil
	}
	return false, newError(FieldCron, s, ErrBadCronSetting, "want on or off")
}
