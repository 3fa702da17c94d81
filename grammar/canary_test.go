package grammar

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func TestCanaryPercent(t *testing.T) {
	good := map[string]float64{"10%": 10, "10": 10, "0.5%": 0.5, "0.5": 0.5, "99.9%": 99.9, "1": 1, "05": 5,
		"33.333%": 33.333, "0.0000000001": 1e-10}
	for s, want := range good {
		p, err := ParseCanaryPercent(s)
		if err != nil || p != want {
			t.Errorf("ParseCanaryPercent(%q) = %v, %v; want %v", s, p, err, want)
		}
		if again, err := ParseCanaryPercent(FormatCanaryPercent(p)); err != nil || again != p {
			t.Errorf("%q renders as %q, which parses as %v, %v", s, FormatCanaryPercent(p), again, err)
		}
	}
	for _, s := range []string{"", "%", "0", "0%", "0.0", "100", "100%", "150%", "-10%", "+10", "1e1", "10%%",
		"%10", ".5", "5.", "10 %", " 10", "ten", "NaN", "Inf", "0x10", "1,5", "10.5.1", "0.00000000001"} {
		_, err := ParseCanaryPercent(s)
		wantErr(t, "ParseCanaryPercent("+s+")", err, ErrBadCanary, FieldCanary)
	}
	// The two kinds of refusal say different things: the form, or the range.
	_, form := ParseCanaryPercent("ten")
	_, rng := ParseCanaryPercent("100%")
	if Reason(form) == Reason(rng) || !strings.Contains(Reason(rng), "below 100%") {
		t.Errorf("reasons %q and %q", Reason(form), Reason(rng))
	}
}

func FuzzParseCanaryPercent(f *testing.F) {
	re := regexp.MustCompile(`^[0-9]+(\.[0-9]+)?%?$`)
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseCanaryPercent(s)
		checkErr(t, err, ErrBadCanary)
		want := len(s) <= maxCanaryLength && re.MatchString(s)
		if want {
			v, _ := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
			want = v > 0 && v < 100
		}
		if (err == nil) != want {
			t.Fatalf("ParseCanaryPercent(%q) = %v, %v, but the rule says %v", s, p, err, want)
		}
		if err == nil {
			if again, err := ParseCanaryPercent(FormatCanaryPercent(p)); err != nil || again != p {
				t.Fatalf("ParseCanaryPercent(%q) = %v renders as %q, which parses as %v, %v", s, p, FormatCanaryPercent(p), again, err)
			}
		}
	})
}
