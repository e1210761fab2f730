package train

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/lcpdiff/lcpdiff/internal/atomicfile"
)

// LogFile and PlotFile are the loss log and its plot in OutDir.
const (
	LogFile  = "train.csv"
	PlotFile = "loss.png"
)

var logHeader = []string{"step", "loss", "lr", "grad_norm", "seconds", "steps_per_s", "samples_per_s"}

// LogRow is one line of the loss log. Loss and GradNorm are the means over
// the steps since the previous row; the rates are measured over them too.
type LogRow struct {
	Step                       int
	Loss, LR, GradNorm         float64
	Seconds                    float64 // training wall time so far, across resumes
	StepsPerSec, SamplesPerSec float64
}

func (r LogRow) record() []string {
	g := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) } // exact: the log of a resumed run compares equal
	return []string{
		strconv.Itoa(r.Step), g(r.Loss), g(r.LR), g(r.GradNorm),
		strconv.FormatFloat(r.Seconds, 'f', 3, 64),
		strconv.FormatFloat(r.StepsPerSec, 'f', 4, 64),
		strconv.FormatFloat(r.SamplesPerSec, 'f', 3, 64),
	}
}

// lossLog is the CSV log, appended to row by row, and the rows so far,
// for the plot.
type lossLog struct {
	path string
	file *os.File
	rows []LogRow
}

// openLog starts the log in dir, or, resuming after step, continues it:
// rows of steps after the checkpoint (written before the run stopped)
// are dropped, so that the log reads as if the run had never stopped.
func openLog(dir string, resumeStep int, resuming bool) (*lossLog, error) {
	l := &lossLog{path: filepath.Join(dir, LogFile)}
	if resuming {
		rows, err := ReadLog(l.path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		for _, r := range rows {
			if r.Step <= resumeStep {
				l.rows = append(l.rows, r)
			}
		}
	}
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Write(logHeader)
	for _, r := range l.rows {
		w.Write(r.record())
	}
	w.Flush()
	if err := atomicfile.WriteFile(l.path, buf.Bytes()); err != nil {
		return nil, fmt.Errorf("train: log: %w", err)
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, fmt.Errorf("train: log: %w", err)
	}
	l.file = f
	return l, nil
}

// append writes one row. Each row goes to the file at once, so that a
// crash loses nothing logged and `tail -f` follows the run.
func (l *lossLog) append(r LogRow) error {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Write(r.record())
	w.Flush()
	if _, err := l.file.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("train: log: %w", err)
	}
	l.rows = append(l.rows, r)
	return nil
}

func (l *lossLog) close() error { return l.file.Close() }

// ReadLog reads a loss log written by Run.
func ReadLog(path string) ([]LogRow, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	records, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("train: log %s: %w", path, err)
	}
	if len(records) == 0 || len(records[0]) != len(logHeader) || records[0][0] != logHeader[0] {
		return nil, fmt.Errorf("train: log %s: not a training log (header %v)", path, logHeader)
	}
	rows := make([]LogRow, 0, len(records)-1)
	for i, rec := range records[1:] {
		var r LogRow
		var err error
		if r.Step, err = strconv.Atoi(rec[0]); err != nil {
			return nil, fmt.Errorf("train: log %s: line %d: %v", path, i+2, err)
		}
		for j, dst := range []*float64{&r.Loss, &r.LR, &r.GradNorm, &r.Seconds, &r.StepsPerSec, &r.SamplesPerSec} {
			if *dst, err = strconv.ParseFloat(rec[j+1], 64); err != nil {
				return nil, fmt.Errorf("train: log %s: line %d: %v", path, i+2, err)
			}
		}
		rows = append(rows, r)
	}
	return rows, nil
}
