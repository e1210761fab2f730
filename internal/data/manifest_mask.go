package data

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// MaskKind is how a manifest gives a mask.
type MaskKind uint8

const (
	MaskFile     MaskKind = iota + 1 // a PNG or JPEG file
	MaskRLE                          // a COCO run-length encoding
	MaskPolygons                     // COCO polygons
)

// Mask is one subject's mask in one frame, as the manifest gives it; Decode
// makes the pixels.
type Mask struct {
	Kind     MaskKind
	Path     string      // MaskFile: the file, resolved
	RLE      RLE         // MaskRLE
	Polygons [][]float64 // MaskPolygons: each x1,y1,x2,y2,... in pixels
}

// parseMask reads a mask by its JSON type: a string is a file, an object
// an RLE and a list polygons. RLE counts are checked here, since that needs
// no image, but not against the frame's size, which needs one.
func parseMask(raw json.RawMessage, dir string) (Mask, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return Mask{}, errors.New("missing")
	}
	switch raw[0] {
	case '"':
		var path string
		if err := json.Unmarshal(raw, &path); err != nil {
			return Mask{}, err
		}
		if path == "" {
			return Mask{}, errors.New("empty file name")
		}
		return Mask{Kind: MaskFile, Path: resolve(dir, path)}, nil
	case '{':
		r, err := parseRLE(raw)
		return Mask{Kind: MaskRLE, RLE: r}, err
	case '[':
		var polys [][]float64
		if err := json.Unmarshal(raw, &polys); err != nil {
			return Mask{}, errors.New("polygons must be a list of lists of numbers [[x1,y1,x2,y2,...],...]")
		}
		if err := checkPolygons(polys); err != nil {
			return Mask{}, err
		}
		return Mask{Kind: MaskPolygons, Polygons: polys}, nil
	}
	return Mask{}, errors.New("want a file name, an RLE object or a list of polygons")
}

// parseRLE reads {"size":[h,w],"counts":[...] or "..."}.
func parseRLE(raw json.RawMessage) (RLE, error) {
	var j struct {
		Size   []int           `json:"size"`
		Counts json.RawMessage `json:"counts"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return RLE{}, fmt.Errorf("RLE: want {\"size\":[h,w],\"counts\":...}: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if len(j.Size) != 2 || j.Size[0] <= 0 || j.Size[1] <= 0 {
		return RLE{}, fmt.Errorf("RLE size %v: want [h,w], both positive", j.Size)
	}
	h, w := j.Size[0], j.Size[1]
	counts := bytes.TrimSpace(j.Counts)
	switch {
	case len(counts) > 0 && counts[0] == '"':
		var s string
		if err := json.Unmarshal(counts, &s); err != nil {
			return RLE{}, err
		}
		return ParseRLE(h, w, s)
	case len(counts) > 0 && counts[0] == '[':
		var c []uint32
		if err := json.Unmarshal(counts, &c); err != nil {
			return RLE{}, errors.New("RLE counts: want a list of non-negative integers or a compressed string")
		}
		r := RLE{H: h, W: w, Counts: c}
		return r, r.check()
	}
	return RLE{}, errors.New("RLE counts: want a list of non-negative integers or a compressed string")
}

func checkPolygons(polys [][]float64) error {
	if len(polys) == 0 {
		return errors.New("no polygons")
	}
	for i, p := range polys {
		// pycocotools reads a 4-number "polygon" as a box; a manifest
		// gives boxes separately, so it is refused rather than guessed.
		if len(p) < 6 || len(p)%2 != 0 {
			return fmt.Errorf("polygon %d has %d numbers: want x1,y1,x2,y2,... for at least 3 points", i, len(p))
		}
	}
	return nil
}

// Decode is the mask at its frame's size w x h, 255 inside and 0 outside.
// A file or RLE of another size is an error: resizing it would hide a
// mask paired with the wrong frame.
func (m Mask) Decode(w, h int) (*Gray, error) {
	switch m.Kind {
	case MaskFile:
		g, err := ReadMask(m.Path)
		if err != nil {
			return nil, err
		}
		if g.W != w || g.H != h {
			return nil, fmt.Errorf("%s is %dx%d but its frame is %dx%d", m.Path, g.W, g.H, w, h)
		}
		for i, v := range g.Pix {
			if v != 0 {
				g.Pix[i] = 255
			}
		}
		return g, nil
	case MaskRLE:
		if m.RLE.W != w || m.RLE.H != h {
			return nil, fmt.Errorf("RLE size [%d,%d] (h,w) differs from its frame's [%d,%d]", m.RLE.H, m.RLE.W, h, w)
		}
		return m.RLE.Decode(), nil
	case MaskPolygons:
		return RasterisePolygons(m.Polygons, w, h), nil
	}
	return nil, errors.New("no mask")
}
