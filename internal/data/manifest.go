package data

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Manifest is a training manifest, loaded. On disk it is JSON Lines: one
// record per line, each a video clip (its frame files) or a still image,
// with a caption and the subjects the caption names; blank lines are
// skipped. A clip (one line):
//
//	{"frames":["train/clip0007/f00.png","train/clip0007/f01.png"],"caption":"a red-blue striped star and a green-yellow dotted circle on sand","subjects":[{"category":"star","phrase":"red-blue striped star","id":"star-stripes-red-blue","boxes":[[0.125,0.25,0.40625,0.5],[0.15625,0.25,0.4375,0.53125]],"masks":["train/clip0007/f00_s0.png","train/clip0007/f01_s0.png"]},{"category":"circle","phrase":"green-yellow dotted circle","boxes":[[0.5,0.5,0.75,0.75],[0.5,0.5,0.75,0.75]],"masks":[{"size":[64,64],"counts":"PQ2`0`100000000000000000000000000000Po0"},[[32,32,48,32,48,48,32,48]]]}]}
//
// An image is the same with "image":"photos/0001.jpg" for "frames" and
// one box and one mask per subject. A record has:
//
//   - frames: a clip's frame files in order, at least two; or image: one
//     image file (JPEG or PNG). Video files are not read (decoding them
//     needs ffmpeg): give their frames.
//   - caption: the text the target image is trained with.
//   - subjects: at least one.
//
// A subject has:
//
//   - category: the word of the static refiner's prompt "a photo of a
//     {category}".
//   - phrase: the words naming the subject, verbatim in the caption.
//   - id (optional): its identity, so that identities can be held out.
//   - boxes: one per frame (one for an image), normalised x0,y0,x1,y1 with
//     0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, y down.
//   - masks: one per frame, each a PNG (or JPEG) file whose non-zero pixels
//     are the subject; or a COCO RLE {"size":[h,w],"counts":...} with
//     counts a list (uncompressed) or a string (compressed); or COCO
//     polygons [[x1,y1,x2,y2,...],...] in pixels (see RasterisePolygons).
//
// Paths are relative to the manifest's folder unless absolute. Loading
// checks what it can without decoding images: that files exist, boxes are
// valid, phrases are in the caption and RLE counts cover their size; a mask
// whose size differs from its frame's is found when the frame is loaded
// (Record.LoadFrame). Unknown fields are errors, so that a misspelt field
// name is not silently ignored.
type Manifest struct {
	Path    string // as given to LoadManifest
	Records []*Record
}

// Record is one line of a manifest: a clip or an image and its subjects.
type Record struct {
	Manifest string // the manifest's path, for messages
	Line     int    // 1-based line number in the manifest

	// Clip tells a video clip (at least two frames) from a still image
	// (exactly one).
	Clip     bool
	Frames   []string // frame files, resolved against the manifest's folder
	Caption  string
	Subjects []Subject
}

// Subject is one subject of a record, annotated in every frame.
type Subject struct {
	Category string
	Phrase   string
	ID       string // empty when the manifest gives none
	Boxes    []Box  // one per frame
	Masks    []Mask // one per frame, decoded by Record.LoadFrame
}

// Box is a normalised box x0, y0, x1, y1 (y down).
type Box [4]float64

// RecordError says which record, and which of its fields, is wrong.
type RecordError struct {
	Manifest string
	Line     int
	Field    string // e.g. "subjects[1].masks[3]"; empty for the whole record
	Err      error
}

func (e *RecordError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s:%d: %v", e.Manifest, e.Line, e.Err)
	}
	return fmt.Sprintf("%s:%d: %s: %v", e.Manifest, e.Line, e.Field, e.Err)
}

func (e *RecordError) Unwrap() error { return e.Err }

// errorf is a RecordError about field of r.
func (r *Record) errorf(field, format string, a ...any) error {
	return &RecordError{Manifest: r.Manifest, Line: r.Line, Field: field, Err: fmt.Errorf(format, a...)}
}

// LoadManifest reads and checks a manifest file. A manifest with bad
// records is an error naming the first one and counting the others, so
// that one run finds how much of a large file needs fixing.
func LoadManifest(path string) (*Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", path, unwrapPathError(err))
	}
	defer f.Close()
	return ReadManifest(f, path, filepath.Dir(path))
}

// ReadManifest reads a manifest from r; name is used in messages and dir
// is the folder relative paths start from.
func ReadManifest(r io.Reader, name, dir string) (*Manifest, error) {
	m := &Manifest{Path: name}
	var first error
	bad := 0
	br := bufio.NewReader(r)
	for line := 1; ; line++ {
		// ReadBytes rather than a Scanner: a clip's RLE masks can make a
		// line longer than any fixed buffer.
		b, err := br.ReadBytes('\n')
		if len(bytes.TrimSpace(b)) > 0 {
			rec, rerr := parseRecord(b, name, line, dir)
			if rerr != nil {
				if bad++; first == nil {
					first = rerr
				}
			} else {
				m.Records = append(m.Records, rec)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("manifest %s: %w", name, err)
		}
	}
	switch {
	case bad > 1:
		return nil, fmt.Errorf("%w (and %d more bad records)", first, bad-1)
	case bad == 1:
		return nil, first
	case len(m.Records) == 0:
		return nil, fmt.Errorf("manifest %s: no records", name)
	}
	return m, nil
}

// jsonRecord and jsonSubject are a line as written; parseRecord checks it
// and turns it into a Record.
type jsonRecord struct {
	Frames   []string      `json:"frames"`
	Image    string        `json:"image"`
	Video    string        `json:"video"`
	Caption  string        `json:"caption"`
	Subjects []jsonSubject `json:"subjects"`
}

type jsonSubject struct {
	Category string            `json:"category"`
	Phrase   string            `json:"phrase"`
	ID       string            `json:"id"`
	Boxes    [][]float64       `json:"boxes"`
	Masks    []json.RawMessage `json:"masks"`
}

func parseRecord(line []byte, manifest string, n int, dir string) (*Record, error) {
	rec := &Record{Manifest: manifest, Line: n}
	var j jsonRecord
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return nil, rec.errorf(te.Field, "JSON %s where %s belongs", te.Value, jsonKind(te.Type.String()))
		}
		return nil, rec.errorf("", "bad JSON: %v", strings.TrimPrefix(err.Error(), "json: "))
	}
	if dec.More() {
		return nil, rec.errorf("", "more than one JSON value on the line")
	}
	rec.Caption = j.Caption
	if err := rec.setFrames(j, dir); err != nil {
		return nil, err
	}
	if strings.TrimSpace(j.Caption) == "" {
		return nil, rec.errorf("caption", "missing or empty")
	}
	if len(j.Subjects) == 0 {
		return nil, rec.errorf("subjects", "no subjects")
	}
	for i, js := range j.Subjects {
		s, err := rec.parseSubject(js, fmt.Sprintf("subjects[%d]", i), dir)
		if err != nil {
			return nil, err
		}
		rec.Subjects = append(rec.Subjects, s)
	}
	return rec, nil
}

// jsonKind names a Go type the way a manifest's author thinks of it.
func jsonKind(goType string) string {
	switch {
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case goType == "string":
		return "a string"
	case strings.HasPrefix(goType, "float"), strings.HasPrefix(goType, "int"):
		return "a number"
	}
	return "an object"
}

// setFrames takes the record's one source of pixels: frames or image.
func (r *Record) setFrames(j jsonRecord, dir string) error {
	given := 0
	for _, set := range []bool{j.Frames != nil, j.Image != "", j.Video != ""} {
		if set {
			given++
		}
	}
	switch {
	case given == 0:
		return r.errorf("", "no frames or image")
	case given > 1:
		return r.errorf("", "give one of frames, image and video")
	case j.Video != "":
		return r.errorf("video", "%q: video files need ffmpeg; give frames", j.Video)
	case j.Image != "":
		r.Frames = []string{resolve(dir, j.Image)}
		return r.checkFile("image", r.Frames[0])
	}
	if len(j.Frames) < 2 {
		return r.errorf("frames", "a clip needs at least 2 frames, got %d (give a still as image)", len(j.Frames))
	}
	r.Clip = true
	for i, f := range j.Frames {
		r.Frames = append(r.Frames, resolve(dir, f))
		if err := r.checkFile(fmt.Sprintf("frames[%d]", i), r.Frames[i]); err != nil {
			return err
		}
	}
	return nil
}

func (r *Record) parseSubject(j jsonSubject, field, dir string) (Subject, error) {
	s := Subject{Category: j.Category, Phrase: j.Phrase, ID: j.ID}
	if strings.TrimSpace(j.Category) == "" {
		return s, r.errorf(field+".category", "missing or empty")
	}
	if strings.TrimSpace(j.Phrase) == "" {
		return s, r.errorf(field+".phrase", "missing or empty")
	}
	// The phrase must be found verbatim: training locates its tokens in
	// the caption's.
	if !strings.Contains(r.Caption, j.Phrase) {
		return s, r.errorf(field+".phrase", "%q is not in the caption %q", j.Phrase, r.Caption)
	}
	n := len(r.Frames)
	if len(j.Boxes) != n {
		return s, r.errorf(field+".boxes", "%d boxes, want one per frame (%d)", len(j.Boxes), n)
	}
	if len(j.Masks) != n {
		return s, r.errorf(field+".masks", "%d masks, want one per frame (%d)", len(j.Masks), n)
	}
	for i, b := range j.Boxes {
		box, err := checkBox(b)
		if err != nil {
			return s, r.errorf(fmt.Sprintf("%s.boxes[%d]", field, i), "%v", err)
		}
		s.Boxes = append(s.Boxes, box)
	}
	for i, raw := range j.Masks {
		mf := fmt.Sprintf("%s.masks[%d]", field, i)
		m, err := parseMask(raw, dir)
		if err != nil {
			return s, r.errorf(mf, "%v", err)
		}
		if m.Kind == MaskFile {
			if err := r.checkFile(mf, m.Path); err != nil {
				return s, err
			}
		}
		s.Masks = append(s.Masks, m)
	}
	return s, nil
}

// checkBox accepts a normalised box that is inside [0, 1] and not empty.
func checkBox(b []float64) (Box, error) {
	if len(b) != 4 {
		return Box{}, fmt.Errorf("%v: want 4 numbers x0,y0,x1,y1, got %d", b, len(b))
	}
	box := Box(b)
	for _, v := range box {
		// The negated test also catches NaN.
		if !(v >= 0 && v <= 1) {
			return box, fmt.Errorf("%v: outside [0,1] (boxes are normalised x0,y0,x1,y1)", b)
		}
	}
	if box[0] >= box[2] || box[1] >= box[3] {
		return box, fmt.Errorf("%v: empty (need x0 < x1 and y0 < y1)", b)
	}
	return box, nil
}

func (r *Record) checkFile(field, path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return r.errorf(field, "%s: %v", path, unwrapPathError(err))
	}
	if st.IsDir() {
		return r.errorf(field, "%s: is a folder", path)
	}
	return nil
}

func resolve(dir, path string) string {
	if filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(dir, path)
}
