package eval

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
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
// run's notes (what it did not measure) and the image-by-image table
// (pairedTable). An argument may name several run folders joined by
// commas, one method run on several data sets ("new-val,new-test"): each
// folder is a row of the first table, and the image-by-image table pools
// the group's images, folder k of a group paired with folder k of the
// first argument's.
func Compare(args []string) (string, error) {
	if len(args) == 0 {
		return "", fmt.Errorf("compare: no run folders given")
	}
	groups := make([][]string, len(args))
	var dirs []string
	for i, a := range args {
		groups[i] = strings.Split(a, ",")
		if len(groups[i]) != len(groups[0]) {
			return "", fmt.Errorf("compare: %s and %s name different numbers of runs (%d, %d): a group pairs its runs one by one with the first argument's", args[0], a, len(groups[0]), len(groups[i]))
		}
		dirs = append(dirs, groups[i]...)
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
	methods := make([]string, len(groups))
	for i := range groups {
		methods[i] = runs[i*len(groups[0])].Method
	}
	paired, err := pairedTable(groups, methods)
	if err != nil {
		return "", err
	}
	b.WriteString(paired)
	return b.String(), nil
}

// pairedTable compares each group of runs after the first with the first
// image by image: for every per-image metric, the mean difference over the
// images both made from the same item and seed (in the runs at the same
// place of their groups), and its standard error. Runs of one bench share
// their items' starting noise, so such a difference is far less noisy
// than the difference of the table's rows, and the standard error says
// whether it is more than noise. The mean is over images, which a summary
// may weigh otherwise (the toy world averages its identity per identity).
// "" when the first group has no records or no other group shares its
// images.
func pairedTable(groups [][]string, methods []string) (string, error) {
	type key struct {
		run int // the run's place in its group
		id  string
	}
	records := make([]map[key]*Record, len(groups))
	for i, g := range groups {
		for k, d := range g {
			path := filepath.Join(d, RecordsFile)
			raw, err := os.ReadFile(path)
			if os.IsNotExist(err) {
				continue
			} else if err != nil {
				return "", err
			}
			recs, _, err := parseRecords(raw, path)
			if err != nil {
				return "", err
			}
			if records[i] == nil {
				records[i] = map[key]*Record{}
			}
			for _, r := range recs {
				records[i][key{k, r.ID}] = r
			}
		}
	}
	if records[0] == nil {
		return "", nil
	}
	// A fixed order, so that the sums are the same every time.
	keys := slices.SortedFunc(maps.Keys(records[0]), func(a, b key) int {
		return cmp.Or(cmp.Compare(a.run, b.run), strings.Compare(a.id, b.id))
	})
	var metrics []string
	for _, k := range keys {
		for m := range records[0][k].Metrics {
			if !slices.Contains(metrics, m) {
				metrics = append(metrics, m)
			}
		}
	}
	slices.Sort(metrics)
	var rows [][]string
	for i := 1; i < len(groups); i++ {
		if records[i] == nil {
			continue
		}
		var pairs [][2]*Record // the same item, seed and prompt
		for _, k := range keys {
			a, b := records[0][k], records[i][k]
			if b != nil && b.Seed == a.Seed && b.Prompt == a.Prompt {
				pairs = append(pairs, [2]*Record{a, b})
			}
		}
		if len(pairs) == 0 {
			continue // another bench's or seed's run: nothing to pair
		}
		cells := []string{mdCell(methods[i]), fmt.Sprint(len(pairs))}
		for _, m := range metrics {
			var diffs []float64
			for _, p := range pairs {
				va, okA := p[0].Metrics[m]
				vb, okB := p[1].Metrics[m]
				if okA && okB {
					diffs = append(diffs, vb-va)
				}
			}
			cells = append(cells, meanAndError(diffs))
		}
		rows = append(rows, cells)
	}
	if len(rows) == 0 || len(metrics) == 0 {
		return "", nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nImage by image against %s (%s), the same items and seeds: mean difference ± standard error\n\n", mdCell(methods[0]), strings.Join(groups[0], ", "))
	row(&b, append([]string{"method", "images"}, metrics...))
	row(&b, append([]string{"---"}, repeat("--:", len(metrics)+1)...))
	for _, r := range rows {
		row(&b, r)
	}
	return b.String(), nil
}

// meanAndError is the mean of d and its standard error (the sample
// standard deviation over the square root of the count), "-" without two
// values.
func meanAndError(d []float64) string {
	n := float64(len(d))
	if len(d) < 2 {
		return "-"
	}
	var sum, sq float64
	for _, x := range d {
		sum += x
	}
	mean := sum / n
	for _, x := range d {
		sq += (x - mean) * (x - mean)
	}
	return fmt.Sprintf("%+.3f ± %.3f", mean, math.Sqrt(sq/(n-1)/n))
}
