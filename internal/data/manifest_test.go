package data

import (
	"bytes"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fixture is a folder with three 16 x 16 frames f0..f2.png, a 16 x 16 mask
// m16.png (the square x, y in 4..11), an 8 x 8 mask m8.png, an all-black
// mask empty.png and a text file bad.png.
func fixture(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for i := range 3 {
		img := NewRGB(16, 16)
		for j := range img.Pix {
			img.Pix[j] = uint8(j*7 + i*50)
		}
		writeTestFile(t, filepath.Join(dir, "f"+string(rune('0'+i))+".png"), rgbPNG(t, img))
	}
	writeTestFile(t, filepath.Join(dir, "m16.png"), grayPNG(t, squareMask(16, 16, 4, 4, 12, 12)))
	writeTestFile(t, filepath.Join(dir, "m8.png"), grayPNG(t, squareMask(8, 8, 2, 2, 6, 6)))
	writeTestFile(t, filepath.Join(dir, "empty.png"), grayPNG(t, NewGray(16, 16)))
	writeTestFile(t, filepath.Join(dir, "bad.png"), []byte("not a PNG"))
	return dir
}

// squareMask is a w x h mask, 255 on [x0, x1) x [y0, y1).
func squareMask(w, h, x0, y0, x1, y1 int) *Gray {
	m := NewGray(w, h)
	for y := y0; y < y1; y++ {
		for x := x0; x < x1; x++ {
			m.Pix[y*w+x] = 255
		}
	}
	return m
}

func rgbPNG(t *testing.T, m *RGB) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, m.W, m.H))
	for i := range m.W * m.H {
		copy(img.Pix[4*i:4*i+3], m.Pix[3*i:3*i+3])
		img.Pix[4*i+3] = 255
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func grayPNG(t *testing.T, m *Gray) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, &image.Gray{Pix: m.Pix, Stride: m.W, Rect: image.Rect(0, 0, m.W, m.H)}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func writeTestFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeManifest writes lines as dir/m.jsonl and returns its path.
func writeManifest(t *testing.T, dir string, lines ...string) string {
	t.Helper()
	path := filepath.Join(dir, "m.jsonl")
	writeTestFile(t, path, []byte(strings.Join(lines, "\n")+"\n"))
	return path
}

// goodClip is a valid clip of f0..f2 whose one subject has a mask of each
// kind: a file, an uncompressed RLE, a compressed RLE. goodImage is a
// valid image with a polygon mask.
const (
	goodClip = `{"frames":["f0.png","f1.png","f2.png"],"caption":"a red ball on grass","subjects":[{"category":"ball","phrase":"red ball","id":"ball-7",` +
		`"boxes":[[0.25,0.25,0.75,0.75],[0.25,0.25,0.75,0.75],[0,0,1,1]],` +
		`"masks":["m16.png",{"size":[16,16],"counts":[68,8,8,8,8,8,8,8,8,8,8,8,8,8,8,8,68]},{"size":[16,16],"counts":"T2880000000000000l1"}]}]}`
	goodImage = `{"image":"f0.png","caption":"a dog and a cat","subjects":[` +
		`{"category":"dog","phrase":"dog","boxes":[[0.25,0.25,0.75,0.75]],"masks":[[[4,4,12,4,12,12,4,12]]]},` +
		`{"category":"cat","phrase":"cat","boxes":[[0,0,0.5,0.5]],"masks":["m16.png"]}]}`
)

func TestLoadManifest(t *testing.T) {
	dir := fixture(t)
	m, err := LoadManifest(writeManifest(t, dir, goodClip, "", goodImage))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Records) != 2 {
		t.Fatalf("%d records, want 2", len(m.Records))
	}
	clip, img := m.Records[0], m.Records[1]
	if !clip.Clip || img.Clip || clip.Line != 1 || img.Line != 3 {
		t.Fatalf("clip %v line %d, image %v line %d", clip.Clip, clip.Line, img.Clip, img.Line)
	}
	if clip.Frames[2] != filepath.Join(dir, "f2.png") || img.Frames[0] != filepath.Join(dir, "f0.png") {
		t.Fatalf("paths not resolved against the manifest's folder: %v %v", clip.Frames, img.Frames)
	}
	s := clip.Subjects[0]
	if s.Category != "ball" || s.Phrase != "red ball" || s.ID != "ball-7" || s.Boxes[2] != (Box{0, 0, 1, 1}) {
		t.Fatalf("subject %+v", s)
	}
	if s.Masks[0].Kind != MaskFile || s.Masks[1].Kind != MaskRLE || s.Masks[2].Kind != MaskRLE || img.Subjects[0].Masks[0].Kind != MaskPolygons {
		t.Fatalf("mask kinds %v %v %v %v", s.Masks[0].Kind, s.Masks[1].Kind, s.Masks[2].Kind, img.Subjects[0].Masks[0].Kind)
	}

	// The four masks are the same 8 x 8 square in four encodings.
	want := squareMask(16, 16, 4, 4, 12, 12)
	for i := range 3 {
		f, err := clip.LoadFrame(i)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(f.Masks[0].Pix, want.Pix) {
			t.Errorf("frame %d: mask is not the square", i)
		}
		if f.Image.W != 16 || f.Boxes[0] != s.Boxes[i] {
			t.Errorf("frame %d: image %dx%d, box %v", i, f.Image.W, f.Image.H, f.Boxes[0])
		}
	}
	f, err := img.LoadFrame(0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f.Masks[0].Pix, want.Pix) || !bytes.Equal(f.Masks[1].Pix, want.Pix) {
		t.Error("image masks are not the square")
	}
}

// TestManifestErrors: each bad line is refused with its line number and
// the field at fault.
func TestManifestErrors(t *testing.T) {
	dir := fixture(t)
	subject := func(fields string) string {
		return `{"image":"f0.png","caption":"a red ball","subjects":[{"category":"ball","phrase":"red ball",` + fields + `}]}`
	}
	okMask := `"boxes":[[0,0,1,1]],"masks":["m16.png"]`
	for _, c := range []struct{ line, want string }{
		{`{"image":"f0.png",`, "m.jsonl:1: bad JSON"},
		{`{"image":"f0.png","caption":"x","subjects":[]} {}`, "m.jsonl:1: more than one JSON value"},
		{subject(okMask + `,"phrse":"x"`), `m.jsonl:1: bad JSON: unknown field "phrse"`},
		{subject(`"boxes":"0,0,1,1","masks":["m16.png"]`), "m.jsonl:1: subjects.boxes: JSON string where a list belongs"},
		{`{"caption":"a","subjects":[]}`, "m.jsonl:1: no frames or image"},
		{`{"image":"f0.png","frames":["f0.png","f1.png"],"caption":"a","subjects":[]}`, "m.jsonl:1: give one of frames, image and video"},
		{`{"video":"clip.mp4","caption":"a","subjects":[]}`, `m.jsonl:1: video: "clip.mp4": video files need ffmpeg; give frames`},
		{`{"frames":["f0.png"],"caption":"a","subjects":[]}`, "m.jsonl:1: frames: a clip needs at least 2 frames, got 1"},
		{`{"frames":["f0.png","gone.png"],"caption":"a","subjects":[]}`, "m.jsonl:1: frames[1]: " + filepath.Join(dir, "gone.png") + ": no such file or directory"},
		{`{"image":"gone.png","caption":"a","subjects":[]}`, "m.jsonl:1: image: "},
		{`{"image":"f0.png","caption":" ","subjects":[]}`, "m.jsonl:1: caption: missing or empty"},
		{`{"image":"f0.png","caption":"a ball","subjects":[]}`, "m.jsonl:1: subjects: no subjects"},
		{`{"image":"f0.png","caption":"a ball","subjects":[{"phrase":"ball",` + okMask + `}]}`, "m.jsonl:1: subjects[0].category: missing or empty"},
		{subject(okMask + `,"phrase":"blue ball"`), `m.jsonl:1: subjects[0].phrase: "blue ball" is not in the caption "a red ball"`},
		{subject(`"boxes":[],"masks":["m16.png"]`), "m.jsonl:1: subjects[0].boxes: 0 boxes, want one per frame (1)"},
		{subject(`"boxes":[[0,0,1,1]],"masks":[]`), "m.jsonl:1: subjects[0].masks: 0 masks, want one per frame (1)"},
		{subject(`"boxes":[[0,0,1.5,1]],"masks":["m16.png"]`), "m.jsonl:1: subjects[0].boxes[0]: [0 0 1.5 1]: outside [0,1]"},
		{subject(`"boxes":[[0,0,-0.1,1]],"masks":["m16.png"]`), "m.jsonl:1: subjects[0].boxes[0]: [0 0 -0.1 1]: outside [0,1]"},
		{subject(`"boxes":[[0.5,0,0.5,1]],"masks":["m16.png"]`), "m.jsonl:1: subjects[0].boxes[0]: [0.5 0 0.5 1]: empty"},
		{subject(`"boxes":[[0,0,1]],"masks":["m16.png"]`), "m.jsonl:1: subjects[0].boxes[0]: [0 0 1]: want 4 numbers"},
		{subject(`"boxes":[[0,0,1,1]],"masks":["gone.png"]`), "m.jsonl:1: subjects[0].masks[0]: " + filepath.Join(dir, "gone.png")},
		{subject(`"boxes":[[0,0,1,1]],"masks":[null]`), "m.jsonl:1: subjects[0].masks[0]: missing"},
		{subject(`"boxes":[[0,0,1,1]],"masks":[7]`), "m.jsonl:1: subjects[0].masks[0]: want a file name, an RLE object or a list of polygons"},
		{subject(`"boxes":[[0,0,1,1]],"masks":[{"size":[16,16],"counts":[10,20]}]`), "m.jsonl:1: subjects[0].masks[0]: RLE counts add up to 30 pixels, size [16,16] has 256"},
		{subject(`"boxes":[[0,0,1,1]],"masks":[{"size":[16],"counts":[256]}]`), "m.jsonl:1: subjects[0].masks[0]: RLE size [16]: want [h,w]"},
		{subject(`"boxes":[[0,0,1,1]],"masks":[{"size":[16,16],"counts":"0~"}]`), `m.jsonl:1: subjects[0].masks[0]: RLE counts string: character '~' at 1`},
		{subject(`"boxes":[[0,0,1,1]],"masks":[{"size":[16,16],"counts":[-1,257]}]`), "m.jsonl:1: subjects[0].masks[0]: RLE counts: want a list of non-negative integers"},
		{subject(`"boxes":[[0,0,1,1]],"masks":[{"size":[16,16],"counts":[256],"area":3}]`), `m.jsonl:1: subjects[0].masks[0]: RLE: want {"size":[h,w],"counts":...}: unknown field "area"`},
		{subject(`"boxes":[[0,0,1,1]],"masks":[[[0,0,4,4]]]`), "m.jsonl:1: subjects[0].masks[0]: polygon 0 has 4 numbers"},
		{subject(`"boxes":[[0,0,1,1]],"masks":[[0,0,4,4,0,4]]`), "m.jsonl:1: subjects[0].masks[0]: polygons must be a list of lists"},
	} {
		_, err := LoadManifest(writeManifest(t, dir, c.line))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s\n got %v\nwant %q", c.line, err, c.want)
			continue
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("error is more than one line: %q", err)
		}
	}
}

// TestManifestErrorCountsTheRest: the first bad record is named and the
// others are counted, so one run shows how much needs fixing.
func TestManifestErrorCountsTheRest(t *testing.T) {
	dir := fixture(t)
	_, err := LoadManifest(writeManifest(t, dir, goodClip, "", `{"image":"x.png"}`, goodImage, `{}`, `[`))
	if err == nil || !strings.HasPrefix(err.Error(), filepath.Join(dir, "m.jsonl")+":3: image: ") || !strings.HasSuffix(err.Error(), "(and 2 more bad records)") {
		t.Fatalf("got %v", err)
	}
	if _, err := LoadManifest(writeManifest(t, dir, "", " ")); err == nil || !strings.Contains(err.Error(), "no records") {
		t.Fatalf("empty manifest: %v", err)
	}
	if _, err := LoadManifest(filepath.Join(dir, "none.jsonl")); err == nil || !strings.Contains(err.Error(), "none.jsonl") {
		t.Fatalf("missing manifest: %v", err)
	}
}

// TestLoadFrameErrors: what is only found once pixels are decoded is
// still reported with the record and the field.
func TestLoadFrameErrors(t *testing.T) {
	dir := fixture(t)
	frames := `"frames":["f0.png","f1.png","bad.png"],"caption":"a ball","subjects":[{"category":"ball","phrase":"ball","boxes":[[0,0,1,1],[0,0,1,1],[0,0,1,1]],`
	m, err := LoadManifest(writeManifest(t, dir,
		`{`+frames+`"masks":["m16.png","m8.png","m16.png"]}]}`,
		`{`+frames+`"masks":["m16.png",{"size":[8,8],"counts":[64]},"m16.png"]}]}`,
		`{`+frames+`"masks":["m16.png","empty.png","m16.png"]}]}`,
	))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		rec, frame int
		want       string
	}{
		{0, 1, "m.jsonl:1: subjects[0].masks[1]: " + filepath.Join(dir, "m8.png") + " is 8x8 but its frame is 16x16"},
		{1, 1, "m.jsonl:2: subjects[0].masks[1]: RLE size [8,8] (h,w) differs from its frame's [16,16]"},
		{2, 1, "m.jsonl:3: subjects[0].masks[1]: empty mask"},
		{0, 2, "m.jsonl:1: frames[2]: read image " + filepath.Join(dir, "bad.png") + ": not a JPEG or PNG file"},
		{0, 3, "m.jsonl:1: frames[3]: no such frame"},
	} {
		_, err := m.Records[c.rec].LoadFrame(c.frame)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("record %d frame %d: got %v, want %q", c.rec, c.frame, err, c.want)
		}
	}
	if _, err := m.Records[0].LoadFrame(0); err != nil {
		t.Errorf("frame 0 is fine: %v", err)
	}
}

// TestDocumentedExample: the example line in the package's manifest
// documentation loads, and its two encodings of the circle's mask (a
// compressed RLE and a polygon) are the same square, its box.
func TestDocumentedExample(t *testing.T) {
	src, err := os.ReadFile("manifest.go")
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for _, l := range strings.Split(string(src), "\n") {
		if strings.HasPrefix(l, "//\t{\"frames\"") {
			line = strings.TrimPrefix(l, "//\t")
		}
	}
	if line == "" {
		t.Fatal("no example line in manifest.go")
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "train/clip0007"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"f00", "f01"} {
		writeTestFile(t, filepath.Join(dir, "train/clip0007", name+".png"), rgbPNG(t, NewRGB(64, 64)))
		writeTestFile(t, filepath.Join(dir, "train/clip0007", name+"_s0.png"), grayPNG(t, squareMask(64, 64, 8, 16, 26, 32)))
	}
	m, err := LoadManifest(writeManifest(t, dir, line))
	if err != nil {
		t.Fatal(err)
	}
	want := squareMask(64, 64, 32, 32, 48, 48)
	for i := range 2 {
		f, err := m.Records[0].LoadFrame(i)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(f.Masks[1].Pix, want.Pix) {
			t.Errorf("frame %d: the circle's mask is not the square [32,48)^2", i)
		}
		if box, _ := maskBox(f.Masks[1]); box != f.Boxes[1] {
			t.Errorf("frame %d: box %v, mask's %v", i, f.Boxes[1], box)
		}
	}
}
