package grammar

import (
	"errors"
	"strconv"
	"strings"
)

// FieldCanary is a canary's share of new connections (hctl deploy
// --canary, the deploy's canary= query value).
const FieldCanary Field = "canary percentage"

// ErrBadCanary: a canary share that is not a plain percentage above 0 and
// below 100.
var ErrBadCanary = errors.New("bad canary percentage")

// maxCanaryLength bounds the text of a share: "99.9999999%" and more
// digits than the steering program can tell apart are refused, not
// rounded.
const maxCanaryLength = 12

// ParseCanaryPercent reads a canary's share of new connections: a decimal
// percentage with an optional '%' ("10%", "10", "0.5%"), above 0 and below
// 100. No sign, no exponent, no leading or trailing '.': what is written
// is what a reader sees. 0 would be no canary and 100 a deploy, so both
// are refused rather than read as either.
func ParseCanaryPercent(s string) (float64, error) {
	bad := func(reason string) (float64, error) {
		return 0, newError(FieldCanary, s, ErrBadCanary, reason)
	}
	num := strings.TrimSuffix(s, "%")
	whole, frac, dotted := strings.Cut(num, ".")
	ok := len(s) <= maxCanaryLength && digits(whole) && (!dotted || digits(frac))
	if !ok {
		return bad("want a percentage of new connections such as 10%, 10 or 0.5%")
	}
	p, err := strconv.ParseFloat(num, 64)
	if err != nil || p <= 0 || p >= 100 {
		return bad("the share must be above 0% and below 100%")
	}
	return p, nil
}

// digits reports whether s is one or more ASCII digits.
func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return s != ""
}

// FormatCanaryPercent writes p as ParseCanaryPercent reads it, without
// the '%' ("10", "0.5"): the deploy's canary= query value.
func FormatCanaryPercent(p float64) string {
	return strconv.FormatFloat(p, 'f', -1, 64)
}
