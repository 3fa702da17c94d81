// Package steer chooses, in the kernel, which listening socket of a
// SO_REUSEPORT group takes each new TCP connection: a BPF program of type
// BPF_PROG_TYPE_SK_REUSEPORT attached to the group, reading a map agentd
// writes.
//
// # Why
//
// With one listening socket shared by the old and the new release, the old
// processes keep accepting until they handle SIGTERM, and a stock server
// (uvicorn, a Go app whose SIGTERM handler is only http.Server.Shutdown)
// then closes connections it accepted but had not read yet: the client sees
// "connection reset by peer" (issue 18). The old processes must stop
// getting new connections before they are told to stop. With a socket per
// release in one reuseport group, this package points new connections at
// the new release's socket; agentd waits until the old sockets' accept
// queues are empty (Queued) and only then sends SIGTERM. The same map gives
// a canary: a share of new connections, chosen per connection, to the new
// release, with no proxy.
//
// # Design
//
// A Group is the program and three maps:
//
//   - a REUSEPORT_SOCKARRAY of 64 slots holding the routed sockets;
//   - the routes word, one u64 in a one-entry array: primary slot, canary
//     slot, threshold. Route writes it with one map update, so a connection
//     sees the old routes or the new ones, never a mix;
//   - a per-CPU array of counters, one per slot, for Steered.
//
// Route puts a new socket in a free slot first, then writes the routes
// word, then takes the sockets no longer routed out of the sockarray, so
// at no instant does the word name an empty slot. Attach sets the program
// on the group with SO_ATTACH_REUSEPORT_EBPF; a program attached before (a
// previous agentd's) is replaced in one RCU swap, so no connection meets
// no program. Close closes this process's fds only: the group keeps the
// program, the program its maps, and steering goes on with the last routes.
//
// The program, per new connection: a 32-bit random number below the
// threshold picks the canary, else the primary; bpf_sk_select_reuseport
// with that slot; if the slot is empty (its socket closed: the kernel
// takes a closing socket out of the sockarray), the other of the two; if
// that fails too, SK_PASS without a selection and the kernel picks by hash
// among the group's listeners. It never returns SK_DROP: a refused
// connection is what this package exists to prevent. The program is built
// with cilium/ebpf's asm package (program.go), so no clang is needed.
//
// # Traps
//
//   - The kernel picks a listener when the SYN arrives. A handshake in
//     flight when Route switches finishes on the old socket: after Route,
//     wait for the old socket's accept queue (Queued) to empty, and give
//     handshakes a round trip to complete, before its processes are told
//     to stop. Queued counts the accept queue only, not the SYN queue.
//   - Connections still queued on a listener are handed to another socket
//     of the group only at the listener's final close (the last fd of it in
//     any process), and only because the program is loaded with the
//     BPF_SK_REUSEPORT_SELECT_OR_MIGRATE attach type (kernel ≥ 5.14): the
//     program then runs for each queued connection and for each handshake
//     of the SYN queue, with ctx->migrating_sk set, and chooses as for a
//     new one. agentd must close its own copy of an old socket too, or the
//     queue is never migrated. Without the program (or with the plain
//     SELECT type) the same close resets them (TestMigrationOnClose shows
//     both).
//   - SO_REUSEPORT counts only when set before bind: a socket bound without
//     it (every socket agentd bound before steering) cannot join a group;
//     its app must move to a new socket, which takes a new port or a moment
//     with both unbound (Route refuses it with ErrNoReusePort).
//   - Go's net.Listen makes MPTCP listeners by default since Go 1.24; the
//     sockarray takes only TCP and UDP sockets. Listen binds plain TCP;
//     Route refuses an MPTCP socket with ErrNotListener.
//   - Every socket of a group has the same address, so sockets are told
//     apart by SO_COOKIE (Cookie), as Steered's keys are; sockets taken
//     back from running processes after a restart are matched by cookie.
//   - A socket can be in one REUSEPORT_SOCKARRAY only: a new Group cannot
//     route to a socket that an attached program's map still holds
//     (ErrInOtherMap). A restarted agentd must reuse the maps: Files gives
//     them for the fd store and the tableflip hand-over, Open takes them
//     back and reads the slots' cookies from the sockarray. (bpffs pinning
//     is unreliable under agentd.service's hardening.) A new Group with new
//     sockets, attached over the old program, works too (TestReplaceProgram).
//     A restart that lost the maps must Detach the old program and wait
//     until the kernel frees its map (a deferred free: 22–73 ms measured
//     here; Route answers ErrInOtherMap until then) before a new Group can
//     route to the same socket, and meanwhile the kernel picks by hash among
//     the group's sockets, old ones included: keep the Files.
//   - The counters count selections, not connections. The kernel runs the
//     program for every segment that finds no connection of its own, not
//     only for SYNs: a late ACK or RST of a connection already gone counts
//     too (seen in the tests, whose listeners take ephemeral ports that
//     were clients' ports a moment ago: up to 0.3 % over), as does a SYN
//     retransmitted after its first was dropped; a migrated connection
//     counts again, for the socket that took it.
//
// # What the program can and cannot do
//
// It reads no packet data and nothing of the connection; it calls three
// helpers (bpf_get_prandom_u32, bpf_map_lookup_elem,
// bpf_sk_select_reuseport) and the kernel's verifier checks it at load.
// It can only choose among the sockets agentd put in its sockarray, all of
// the same group (same address, same owner): it cannot send a connection
// to another address, another user's socket, or out of the machine, and
// it cannot refuse one. Loading it and creating its maps needs CAP_BPF
// and CAP_NET_ADMIN (root); attaching it needs only the socket. Supported
// says whether this process can, and why not.
package steer
