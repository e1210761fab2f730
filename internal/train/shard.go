package train

import (
	"fmt"
	"strconv"
)

// shard is a data source's place in the run's global sample order and
// the part of it this process reads: rank r of world W takes global
// samples base+r, base+r+W, base+r+2W, ... Every source keeps its
// position this way so that State is the job's position, whatever the
// rank, and Restore and Shard compose in either order.
type shard struct {
	base  int // the global position at the last Restore or Shard
	taken int // samples this rank has handed out since
	rank  int
	world int // 0 means 1: a source nobody sharded
}

func (s *shard) size() int { return max(s.world, 1) }

// index is the global index of the i-th sample from here on this rank.
func (s *shard) index(i int) int { return s.base + (s.taken+i)*s.size() + s.rank }

// position is how many global samples the job has taken: this rank's
// share and, the ranks moving in step, as many from every other.
func (s *shard) position() int { return s.base + s.taken*s.size() }

// advance records n samples handed out.
func (s *shard) advance(n int) { s.taken += n }

func (s *shard) state() []byte { return strconv.AppendInt(nil, int64(s.position()), 10) }

// restore goes back to a global position state encodes; what names the
// source in the error.
func (s *shard) restore(state []byte, what string) error {
	n, err := strconv.Atoi(string(state))
	if err != nil || n < 0 {
		return fmt.Errorf("%s: bad position %q", what, state)
	}
	s.base, s.taken = n, 0
	return nil
}

// reshard makes this rank's share start at the current global position.
func (s *shard) reshard(rank, world int, what string) error {
	if world < 1 || rank < 0 || rank >= world {
		return fmt.Errorf("%s: rank %d is outside 0..%d", what, rank, world-1)
	}
	s.base, s.taken = s.position(), 0
	s.rank, s.world = rank, world
	return nil
}
