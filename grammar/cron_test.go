package grammar

import (
	"errors"
	"testing"
)

func TestParseCronSetting(t *testing.T) {
	for in, want := range map[string]bool{"on": true, "off": false} {
		if got, err := ParseCronSetting(in); err != nil || got != want {
			t.Errorf("ParseCronSetting(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "On", "yes", "true", "0", "off "} {
		if _, err := ParseCronSetting(in); !errors.Is(err, ErrBadCronSetting) {
			t.Errorf("ParseCronSetting(%q): %v, want ErrBadCronSetting", in, err)
		}
	}
}
