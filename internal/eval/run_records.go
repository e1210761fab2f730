package eval

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/lcpdiff/lcpdiff/internal/atomicfile"
)

// records.jsonl holds one JSON record per finished image, appended and
// fsynced only after the image's PNG is in place. A kill can therefore
// leave at most a partial last line, which the next run drops (that image
// is made again); any other damage is an error, never silently skipped.

// Record is one generated image and its measurements.
type Record struct {
	ID     string `json:"id"`
	Image  string `json:"image"` // the PNG, relative to the run folder
	Prompt string `json:"prompt"`
	Seed   uint64 `json:"seed"`
	Width  int    `json:"width"`
	Height int    `json:"height"`
	// Subjects are the requested boxes, in the item's subject order.
	Subjects []RecordSubject `json:"subjects"`
	// CLIP and DINO are the image's embeddings (CLIP's projected
	// image features, DINO's class token); absent without the model.
	CLIP []float32 `json:"clip,omitempty"`
	DINO []float32 `json:"dino,omitempty"`
	// Detections are the detector's boxes at or above its threshold;
	// null without a detector.
	Detections []DetectedBox `json:"detections"`
	// Metrics are the bench scorer's per-image metrics.
	Metrics map[string]float64 `json:"metrics,omitempty"`
	// Seconds is the wall time of generating and measuring the image.
	Seconds float64 `json:"seconds"`
}

// RecordSubject is a subject's requested box in a record.
type RecordSubject struct {
	Name string     `json:"name"`
	Box  [4]float64 `json:"box"`
}

func newRecord(item *Item, image string, w, h int) *Record {
	r := &Record{ID: item.ID, Image: image, Prompt: item.Prompt, Seed: item.Seed, Width: w, Height: h}
	for _, s := range item.Subjects {
		r.Subjects = append(r.Subjects, RecordSubject{Name: s.Name, Box: s.Box})
	}
	return r
}

// recordsFile is records.jsonl open for appending, with the records read.
type recordsFile struct {
	path  string
	f     *os.File
	byID  map[string]*Record
	order []string // IDs in file order
}

// openRecords reads path (a missing file is an empty run), drops a partial
// last line and opens the file for appending.
func openRecords(path string, log io.Writer) (*recordsFile, error) {
	raw, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	recs, good, err := parseRecords(raw, path)
	if err != nil {
		return nil, err
	}
	if good < len(raw) {
		fmt.Fprintf(log, "%s:%d: dropped a partial last record (an interrupted write); its image is made again\n", path, len(recs)+1)
		if err := os.Truncate(path, int64(good)); err != nil {
			return nil, err
		}
	}
	rf := &recordsFile{path: path, byID: map[string]*Record{}}
	for _, rec := range recs {
		rf.byID[rec.ID] = rec
		rf.order = append(rf.order, rec.ID)
	}
	rf.f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	return rf, atomicfile.SyncDir(filepath.Dir(path))
}

// parseRecords returns the records of raw, the bytes of path, in file
// order, and the bytes their whole lines take: less than len(raw) when
// the last line is partial (an interrupted write), which is left out. Any
// other damage, and an ID twice, is an error.
func parseRecords(raw []byte, path string) (recs []*Record, good int, err error) {
	seen := map[string]bool{}
	for line := 1; good < len(raw); line++ {
		end := bytes.IndexByte(raw[good:], '\n')
		last := end < 0 || good+end+1 == len(raw)
		var rec Record
		if end < 0 || json.Unmarshal(raw[good:good+end], &rec) != nil || rec.ID == "" {
			if !last {
				return nil, 0, fmt.Errorf("%s:%d: not a record (the file is damaged; only a partial last line is repaired)", path, line)
			}
			break
		}
		if seen[rec.ID] {
			return nil, 0, fmt.Errorf("%s:%d: record %s appears twice", path, line, rec.ID)
		}
		seen[rec.ID] = true
		recs = append(recs, &rec)
		good += end + 1
	}
	return recs, good, nil
}

// checkAgainst makes sure the records were made for these items: the same
// prompt and seed under the same ID. Records of IDs the run does not list
// (a larger --limit before) are kept but left out of the summary.
func (rf *recordsFile) checkAgainst(items []Item) error {
	for i := range items {
		it := &items[i]
		rec := rf.byID[it.ID]
		if rec == nil {
			continue
		}
		if rec.Prompt != it.Prompt || rec.Seed != it.Seed || len(rec.Subjects) != len(it.Subjects) {
			return fmt.Errorf("%s: record %s was made from %q seed %d, this run's item is %q seed %d: use another --out for other settings",
				rf.path, it.ID, rec.Prompt, rec.Seed, it.Prompt, it.Seed)
		}
		for k, s := range it.Subjects {
			if rec.Subjects[k] != (RecordSubject{Name: s.Name, Box: s.Box}) {
				return fmt.Errorf("%s: record %s has subject %d %s at %v, this run's item %s at %v: use another --out for other settings",
					rf.path, it.ID, k+1, rec.Subjects[k].Name, rec.Subjects[k].Box, s.Name, s.Box)
			}
		}
	}
	return nil
}

// append writes rec as one line and syncs it to disk before returning:
// once append returns, a kill cannot lose the image.
func (rf *recordsFile) append(rec *Record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("record %s: %w", rec.ID, err)
	}
	if _, err := rf.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("%s: %w", rf.path, err)
	}
	if err := rf.f.Sync(); err != nil {
		return fmt.Errorf("%s: %w", rf.path, err)
	}
	rf.byID[rec.ID] = rec
	rf.order = append(rf.order, rec.ID)
	return nil
}

// rewrite replaces the file with the records as they are now, in file
// order, through a temporary file and a rename, and reopens it for
// appending.
func (rf *recordsFile) rewrite() error {
	var buf bytes.Buffer
	for _, id := range rf.order {
		b, err := json.Marshal(rf.byID[id])
		if err != nil {
			return fmt.Errorf("record %s: %w", id, err)
		}
		buf.Write(append(b, '\n'))
	}
	if err := atomicfile.WriteFile(rf.path, buf.Bytes()); err != nil {
		return err
	}
	f, err := os.OpenFile(rf.path, os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	rf.f.Close() // the replaced file's: nothing was written to it
	rf.f = f
	return nil
}

// Close closes the file.
func (rf *recordsFile) Close() error { return rf.f.Close() }
