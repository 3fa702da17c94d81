package steer

import (
	"math"

	"github.com/cilium/ebpf/asm"
)

// The routes word, the one value the program reads per connection (key 0 of
// a one-entry array map): written whole by one bpf(MAP_UPDATE_ELEM), so a
// connection sees the old routes or the new ones, never a mix.
//
//	bits 63..48  primary slot in the sockarray
//	bits 47..32  canary slot
//	bits 31..0   threshold: a connection whose 32-bit random number is
//	             below it goes to the canary
//
// A zero word (before the first Route) names slot 0 for both with threshold
// 0; slot 0 is empty until a Route fills it, and an empty slot falls back to
// the kernel's hash.
func routesWord(primary, canary uint32, threshold uint32) uint64 {
	return uint64(primary)<<48 | uint64(canary)<<32 | uint64(threshold)
}

// threshold turns a canary share in percent (0 < p < 100) into the bound
// the program compares a uniform 32-bit random number with.
func threshold(percent float64) uint32 {
	t := math.Round(percent / 100 * (1 << 32))
	if t >= math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(t)
}

// numSlots is the sockarray's size. A Route holds at most two sockets and
// adds new ones before it removes old ones, so four would do; the rest let
// freed slots rest before reuse (round robin), so a count still in flight
// for a socket just removed is not credited to the next one.
const numSlots = 64

// skPass is SK_PASS: the connection goes on, to the selected socket or,
// without a selection, to one the kernel picks by hash. The program never
// returns SK_DROP, which would refuse the connection.
const skPass = 1

// Stack slots (offsets from the frame pointer R10).
const (
	stackZero = -4 // u32 0: the routes word's key
	stackSlot = -8 // u32: the slot being tried, key of sockarray and counters
)

// program is the steering program, BPF_PROG_TYPE_SK_REUSEPORT, run by the
// kernel for every new connection to the group (at its SYN) and for every
// connection a closing listener hands on (ctx->migrating_sk set). Both
// cases take the same path, so the program reads nothing of its context
// but passes it to the helper:
//
//	r := bpf_get_prandom_u32()
//	w := routes[0]
//	first, second := w.primary, w.canary
//	if r < w.threshold { first, second = w.canary, w.primary }
//	for slot in first, second (second only if it differs):
//		if bpf_sk_select_reuseport(ctx, socks, &slot, 0) == 0 { counts[slot]++; return SK_PASS }
//	return SK_PASS // no selection: the kernel picks by hash in the group
//
// A slot is empty when its socket closed (the kernel removes a closing
// listener from the sockarray before it migrates that listener's queue), so
// a closing canary falls back to the primary and a closing primary to the
// canary, and only with both gone does the kernel choose. In the migrating
// case the kernel's choice is among the listeners still open: the closing
// one has left the group already.
//
// Registers: R6 the context, R7 the random number, R8 the routes word, R9
// the second choice (R6 to R9 survive helper calls).
func program(socks, routes, counts int) asm.Instructions {
	selectSlot := func(label string) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Reg(asm.R1, asm.R6).WithSymbol(label),
			asm.LoadMapPtr(asm.R2, socks),
			asm.Mov.Reg(asm.R3, asm.RFP),
			asm.Add.Imm(asm.R3, stackSlot),
			asm.Mov.Imm(asm.R4, 0),
			asm.FnSkSelectReuseport.Call(),
		}
	}
	var p asm.Instructions
	p = append(p,
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.FnGetPrandomU32.Call(),
		asm.Mov.Reg32(asm.R7, asm.R0),

		// w := routes[0]
		asm.StoreImm(asm.RFP, stackZero, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, routes),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stackZero),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"), // cannot happen in an array map; the verifier wants the check
		asm.LoadMem(asm.R8, asm.R0, 0, asm.DWord),

		// R2 = primary, R4 = canary, R3 = threshold (Mov32 keeps the low half)
		asm.Mov.Reg(asm.R2, asm.R8),
		asm.RSh.Imm(asm.R2, 48),
		asm.Mov.Reg(asm.R4, asm.R8),
		asm.RSh.Imm(asm.R4, 32),
		asm.And.Imm(asm.R4, 0xffff),
		asm.Mov.Reg32(asm.R3, asm.R8),
		asm.JGE.Reg(asm.R7, asm.R3, "primary_first"), // unsigned

		// canary first, then the primary
		asm.StoreMem(asm.RFP, stackSlot, asm.R4, asm.Word),
		asm.Mov.Reg(asm.R9, asm.R2),
		asm.Ja.Label("first"),

		// primary first, then the canary
		asm.StoreMem(asm.RFP, stackSlot, asm.R2, asm.Word).WithSymbol("primary_first"),
		asm.Mov.Reg(asm.R9, asm.R4),
	)
	p = append(p, selectSlot("first")...)
	p = append(p,
		asm.JEq.Imm(asm.R0, 0, "count"),

		// The first slot was empty: the second, unless it is the same.
		asm.LoadMem(asm.R1, asm.RFP, stackSlot, asm.Word),
		asm.JEq.Reg(asm.R1, asm.R9, "pass"),
		asm.StoreMem(asm.RFP, stackSlot, asm.R9, asm.Word),
	)
	p = append(p, selectSlot("second")...)
	p = append(p,
		asm.JNE.Imm(asm.R0, 0, "pass"),

		// counts[slot]++ (per CPU; atomic anyway, it costs nothing here)
		asm.LoadMapPtr(asm.R1, counts).WithSymbol("count"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stackSlot),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),

		asm.Mov.Imm(asm.R0, skPass).WithSymbol("pass"),
		asm.Return(),
	)
	return p
}
