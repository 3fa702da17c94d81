// Package grammar is the one place that says what a well-formed name or
// spec looks like: app names, process types and names, config keys and
// values, release names, formation entries, readiness kinds and durations.
// hctl checks arguments with it before it sends anything, and agentd checks
// every request with it again, so the two can never disagree on what is
// valid. (Socket specs have their own root package, sockets, which also
// binds them.)
//
// It is a root package, not one under agentd/internal, because hctl must
// import it; it imports nothing but the standard library, so hctl's
// dependency graph stays small.
//
// Every check returns nil or an *Error. Its Field and Reason say what is
// wrong in neutral words: they name no hctl flag and no API field, so each
// side frames them in its own wording. errors.Is matches its sentinel
// (ErrBadAppName, ErrReservedConfigKey, …); errors.As gets the *Error.
//
// Only the syntax lives here. Whether an app of that name exists, whether a
// Procfile has that process type, or whether a release is kept is for
// agentd to decide.
package grammar
