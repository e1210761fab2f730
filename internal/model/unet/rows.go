package unet

import (
	"fmt"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// RowSubjects groups per-subject rows (rowOf[k] is subject k's batch row)
// into each row's subjects, in order: rows[r] lists the subjects of row r
// of a batch of batch rows.
func RowSubjects(rowOf []int, batch int) ([][]int, error) {
	rows := make([][]int, batch)
	for k, r := range rowOf {
		if r < 0 || r >= batch {
			return nil, fmt.Errorf("subject %d is set for row %d of a batch of %d", k, r, batch)
		}
		rows[r] = append(rows[r], k)
	}
	return rows, nil
}

// PerRow computes a processor's conditioning term for a batch whose rows
// have subjects of their own (rowOf[k] is subject k's row, as in a
// training micro-batch of several samples): row r of q attends to its own
// subjects alone, term(q[r:r+1], subjects of r), and a row with none (or
// whose term is nil) takes none(). The rows stack along the first
// dimension; nil when no row has a term. Rows go one at a time so that no
// row computes attention to another row's subjects only to mask it away.
func PerRow(q *torch.Tensor, rowOf []int, term func(q *torch.Tensor, subjects []int) *torch.Tensor, none func() *torch.Tensor) *torch.Tensor {
	subjectsOf, err := RowSubjects(rowOf, int(q.Size(0)))
	if err != nil {
		panic(&torch.Error{Op: "conditioning", Msg: err.Error()})
	}
	rows := make([]*torch.Tensor, len(subjectsOf))
	found := false
	for r, subjects := range subjectsOf {
		if len(subjects) > 0 {
			rows[r] = term(q.Narrow(0, int64(r), 1), subjects)
		}
		if rows[r] == nil {
			rows[r] = none()
		} else {
			found = true
		}
	}
	if !found {
		return nil
	}
	return torch.Cat(rows, 0)
}

// Pick is all[k] for each k of which (a row's share of per-subject
// values); nil for nil.
func Pick[T any](all []T, which []int) []T {
	if all == nil {
		return nil
	}
	out := make([]T, len(which))
	for i, k := range which {
		out[i] = all[k]
	}
	return out
}
