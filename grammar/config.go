package grammar

import "strings"

const (
	// MaxConfigKeyLength: keys become environment variable names.
	MaxConfigKeyLength = 128
	// MaxConfigValueLength caps one value: config vars are copied into
	// every process's environment and every release's snapshot.
	MaxConfigValueLength = 64 << 10
)

// reservedKeys are environment variables agentd sets in every process
// itself; reservedPrefixes are whole namespaces it owns (AGENTD_APP,
// LISTEN_FDS, …, and those it may add later). A config var of that name
// would be overridden or, worse, break socket activation.
var (
	reservedKeys     = []string{"PORT", "NOTIFY_SOCKET"}
	reservedPrefixes = []string{"AGENTD_", "LISTEN_"}
)

// CheckConfigKey checks the syntax of a config key: a letter or '_', then
// letters, digits or '_', at most 128 in all
// (^[A-Za-z_][A-Za-z0-9_]{0,127}$). It is what unsetting a key needs.
func CheckConfigKey(k string) error {
	ok := len(k) >= 1 && len(k) <= MaxConfigKeyLength && (isLetter(k[0]) || k[0] == '_')
	for i := 1; ok && i < len(k); i++ {
		ok = isLetter(k[i]) || isDigit(k[i]) || k[i] == '_'
	}
	if !ok {
		return newError(FieldConfigKey, k, ErrBadConfigKey,
			"use letters, digits and '_', not starting with a digit, at most 128")
	}
	return nil
}

// Reserved reports whether agentd sets k in every process itself: PORT,
// NOTIFY_SOCKET, AGENTD_*, LISTEN_*.
func Reserved(k string) bool {
	for _, r := range reservedKeys {
		if k == r {
			return true
		}
	}
	for _, p := range reservedPrefixes {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}

// CheckSettableConfigKey checks a key that is to be set: CheckConfigKey,
// and not Reserved (ErrReservedConfigKey).
func CheckSettableConfigKey(k string) error {
	if err := CheckConfigKey(k); err != nil {
		return err
	}
	if Reserved(k) {
		return newError(FieldConfigKey, k, ErrReservedConfigKey,
			"agentd sets it itself (PORT, NOTIFY_SOCKET, AGENTD_*, LISTEN_*)")
	}
	return nil
}

// CheckConfigValue checks the value of config key k: no NUL byte (an
// environment string cannot hold one), at most 64 KiB.
func CheckConfigValue(k, v string) error {
	if strings.IndexByte(v, 0) >= 0 || len(v) > MaxConfigValueLength {
		return newError(FieldConfigValue, k, ErrBadConfigValue, "no NUL bytes, at most 64 KiB")
	}
	return nil
}
