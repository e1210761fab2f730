package torch

/*
#include <stdlib.h>
#include "lcptorch.h"
*/
import "C"

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"strconv"
	"time"
	"unsafe"
)

// DefaultTimeout is how long a process group waits for its peers, to join
// or to take part in a collective, before it gives up with an error. It is
// torch.distributed's default: a rank may legitimately spend minutes away
// from the collectives, saving a checkpoint or sampling previews.
const DefaultTimeout = 30 * time.Minute

// ProcessGroup is one process's membership of a data-parallel job: c10d's
// TCPStore rendezvous and a Gloo (or NCCL) process group, as
// torch.distributed.init_process_group makes them. Every rank must make the
// same collective calls, with tensors of the same shapes, in the same order.
//
// Its methods return errors rather than panic: a peer that died or never
// came is an error after the timeout, which a job reports, not a bug.
type ProcessGroup struct {
	h         C.lt_process_group
	rank      int
	localRank int
	world     int
	master    string // host:port, for messages
}

// InitFromEnv joins the job torchrun (or any launcher that sets the same
// variables) started this process in: RANK, WORLD_SIZE, LOCAL_RANK,
// MASTER_ADDR and MASTER_PORT. It returns nil, nil when WORLD_SIZE is unset
// or 1: a single process needs no group.
//
// The backend is gloo unless LCPDIFF_DIST_BACKEND says nccl, and the timeout
// is DefaultTimeout unless LCPDIFF_DIST_TIMEOUT gives a duration ("90s",
// "10m"); torchrun has no variables for either.
func InitFromEnv() (*ProcessGroup, error) {
	world, ok, err := envInt("WORLD_SIZE")
	if err != nil || !ok || world == 1 {
		return nil, err
	}
	rank, ok, err := envInt("RANK")
	if err == nil && !ok {
		err = fmt.Errorf("torch: WORLD_SIZE=%d but RANK is unset", world)
	}
	if err != nil {
		return nil, err
	}
	localRank, hasLocal, err := envInt("LOCAL_RANK")
	if err != nil {
		return nil, err
	}
	addr := os.Getenv("MASTER_ADDR")
	if addr == "" {
		return nil, fmt.Errorf("torch: WORLD_SIZE=%d but MASTER_ADDR is unset", world)
	}
	port, ok, err := envInt("MASTER_PORT")
	if err == nil && !ok {
		err = fmt.Errorf("torch: WORLD_SIZE=%d but MASTER_PORT is unset", world)
	}
	if err != nil {
		return nil, err
	}
	backend := "gloo"
	if b := os.Getenv("LCPDIFF_DIST_BACKEND"); b != "" {
		backend = b
	}
	timeout := DefaultTimeout
	if s := os.Getenv("LCPDIFF_DIST_TIMEOUT"); s != "" {
		if timeout, err = time.ParseDuration(s); err != nil {
			return nil, fmt.Errorf("torch: LCPDIFF_DIST_TIMEOUT: %w", err)
		}
	}
	pg, err := NewProcessGroup(backend, addr, port, rank, world, timeout)
	if err != nil {
		return nil, err
	}
	if hasLocal {
		pg.localRank = localRank
	}
	return pg, nil
}

// envInt reads an integer variable; ok is false when it is unset or empty.
func envInt(name string) (v int, ok bool, err error) {
	s := os.Getenv(name)
	if s == "" {
		return 0, false, nil
	}
	v, err = strconv.Atoi(s)
	if err != nil {
		return 0, false, fmt.Errorf("torch: %s=%q is not an integer", name, s)
	}
	return v, true, nil
}

// NewProcessGroup joins a job of world processes as rank, meeting the others
// at addr:port, where rank 0 serves the rendezvous. backend is "gloo" (CPU
// tensors, any machine) or "nccl" (CUDA tensors, when the shim was built
// against a libtorch with NCCL). It blocks until every rank has joined, or
// fails after timeout with an error naming the address.
func NewProcessGroup(backend, addr string, port, rank, world int, timeout time.Duration) (*ProcessGroup, error) {
	master := fmt.Sprintf("%s:%d", addr, port)
	// Checked here too so that a misconfigured job gets the same error from
	// a shim built without Gloo.
	switch {
	case port < 1 || port > 65535:
		return nil, fmt.Errorf("torch: process group at %s: port %d is not a TCP port", master, port)
	case world < 1 || rank < 0 || rank >= world:
		return nil, fmt.Errorf("torch: process group at %s: rank %d is outside 0..%d", master, rank, world-1)
	case timeout <= 0:
		return nil, fmt.Errorf("torch: process group at %s: timeout %v is not positive", master, timeout)
	}
	// The shim counts whole seconds; rounding up keeps a short timeout from
	// becoming none.
	secs := int(math.Min(math.Ceil(timeout.Seconds()), math.MaxInt32))
	cb, ca := C.CString(backend), C.CString(addr)
	defer C.free(unsafe.Pointer(cb))
	defer C.free(unsafe.Pointer(ca))
	var h C.lt_process_group
	if err := C.lt_dist_init(cb, ca, C.int(port), C.int(rank), C.int(world), C.int(secs), &h); err != nil {
		return nil, distError("init", fmt.Sprintf("%s rank %d of %d, master %s", backend, rank, world, master), err)
	}
	pg := &ProcessGroup{h: h, rank: rank, localRank: rank, world: world, master: master}
	runtime.SetFinalizer(pg, (*ProcessGroup).Close)
	return pg, nil
}

// distError turns a shim error, which it frees, into a *Error that says
// which rank of which job failed.
func distError(op, where string, err C.lt_error) error {
	msg := C.GoString(err)
	C.lt_error_free(err)
	return &Error{Op: "dist." + op, Msg: where + ": " + msg}
}

// where names this process in errors.
func (pg *ProcessGroup) where() string {
	return fmt.Sprintf("rank %d of %d, master %s", pg.rank, pg.world, pg.master)
}

// Rank is this process's index in the job, 0 to WorldSize()-1.
func (pg *ProcessGroup) Rank() int { return pg.rank }

// LocalRank is this process's index on its machine (LOCAL_RANK), the CUDA
// device it should use; it is Rank for a group not made by InitFromEnv.
func (pg *ProcessGroup) LocalRank() int { return pg.localRank }

// WorldSize is the number of processes in the job.
func (pg *ProcessGroup) WorldSize() int { return pg.world }

// AllReduceMean replaces each tensor, in place, with its mean over all
// ranks: what data-parallel training does to gradients between backward
// and the optimizer step. Tensors of one dtype and device travel together
// in a few large messages.
func (pg *ProcessGroup) AllReduceMean(ts ...*Tensor) error {
	return pg.collective("all_reduce", ts, func(hs *C.lt_tensor, n C.int) C.lt_error {
		return C.lt_dist_all_reduce(pg.h, hs, n, C.LT_DIST_AVG)
	})
}

// Broadcast replaces each tensor, in place, with root's: how every rank
// starts from the same parameters. Parameters that require grad may be
// passed; the copy is not recorded by autograd.
func (pg *ProcessGroup) Broadcast(root int, ts ...*Tensor) error {
	return pg.collective("broadcast", ts, func(hs *C.lt_tensor, n C.int) C.lt_error {
		return C.lt_dist_broadcast(pg.h, hs, n, C.int(root))
	})
}

// Barrier returns once every rank has called it.
func (pg *ProcessGroup) Barrier() error {
	if err := pg.open("barrier"); err != nil {
		return err
	}
	err := C.lt_dist_barrier(pg.h)
	runtime.KeepAlive(pg)
	if err != nil {
		return distError("barrier", pg.where(), err)
	}
	return nil
}

func (pg *ProcessGroup) collective(op string, ts []*Tensor, call func(*C.lt_tensor, C.int) C.lt_error) error {
	if err := pg.open(op); err != nil {
		return err
	}
	if len(ts) == 0 {
		return nil
	}
	// A nil here is usually a parameter without a gradient. Failing before
	// the collective leaves the other ranks waiting until their timeout,
	// but that is the error they should see.
	for i, t := range ts {
		if t.Freed() {
			return &Error{Op: "dist." + op, Msg: fmt.Sprintf("%s: tensor %d of %d is nil or freed", pg.where(), i, len(ts))}
		}
	}
	hs := handles(ts)
	err := call(&hs[0], C.int(len(hs)))
	runtime.KeepAlive(pg)
	runtime.KeepAlive(ts)
	if err != nil {
		return distError(op, pg.where(), err)
	}
	return nil
}

func (pg *ProcessGroup) open(op string) error {
	if pg == nil || pg.h == nil {
		return &Error{Op: "dist." + op, Msg: "process group is nil or closed"}
	}
	return nil
}

// Close leaves the group and releases its threads and sockets. It does not
// wait for the other ranks; call Barrier first for an orderly end. It is
// safe to call twice.
func (pg *ProcessGroup) Close() {
	if pg != nil && pg.h != nil {
		C.lt_dist_free(pg.h)
		pg.h = nil
		runtime.SetFinalizer(pg, nil)
	}
}
