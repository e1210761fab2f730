package eval

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ReadSummary reads a run folder's summary.json.
func ReadSummary(dir string) (*Summary, error) {
	path := filepath.Join(dir, SummaryFile)
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("run %s: %w (an unfinished run has no summary: run it again to finish)", dir, err)
	}
	var s Summary
	if err := json.NewDecoder(bytes.NewReader(raw)).Decode(&s); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &s, nil
}

// Compare is the Markdown table of several runs, one row per run labelled
// by its method, as the paper's tables compare methods, followed by each
// run's notes (what it did not measure).
func Compare(dirs []string) (string, error) {
	if len(dirs) == 0 {
		return "", fmt.Errorf("compare: no run folders given")
	}
	var runs []*Summary
	for _, d := range dirs {
		s, err := ReadSummary(d)
		if err != nil {
			return "", err
		}
		runs = append(runs, s)
	}
	var b strings.Builder
	b.WriteString(MarkdownTable(runs))
	for i, r := range runs {
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "\n- %s (%s): %s", mdCell(r.Method), dirs[i], n)
		}
	}
	if b.String()[b.Len()-1] != '\n' {
		b.WriteString("\n")
	}
	return b.String(), nil
}
