package grammar

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxMaintenancePage bounds a maintenance page (hctl maintenance --page):
// it is kept in the app's state and handed to the responder in its
// environment, where one value may not pass 128 KiB.
const MaxMaintenancePage = 64 << 10

// FieldMaintenancePage is the field of a bad maintenance page.
const FieldMaintenancePage Field = "maintenance page"

// ErrBadMaintenancePage: a page too large, with a NUL byte, or not UTF-8.
var ErrBadMaintenancePage = errors.New("bad maintenance page")

// CheckMaintenancePage checks a maintenance page: UTF-8 text without NUL,
// at most MaxMaintenancePage bytes. "" stands for the built-in page.
func CheckMaintenancePage(page string) error {
	short := fmt.Sprintf("%d bytes", len(page))
	switch {
	case len(page) > MaxMaintenancePage:
		return newError(FieldMaintenancePage, short, ErrBadMaintenancePage,
			fmt.Sprintf("at most %d KiB", MaxMaintenancePage>>10))
	case strings.IndexByte(page, 0) >= 0:
		return newError(FieldMaintenancePage, short, ErrBadMaintenancePage, "a NUL byte: want an HTML or text page")
	case !utf8.ValidString(page):
		return newError(FieldMaintenancePage, short, ErrBadMaintenancePage, "not UTF-8: want an HTML or text page")
	}
	return nil
}
