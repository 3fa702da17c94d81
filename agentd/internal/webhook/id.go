package webhook

import (
	"crypto/rand"
	"encoding/hex"
)

func newID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}
