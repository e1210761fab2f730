package golden

import (
	"archive/zip"
	"io"
	"os"
	"strings"
	"testing"
)

// The golden detector's forward, as torch.jit.save wrote its code.
const (
	detectorSignature = "images: Tensor) -> Tuple[Tensor, Tensor, Tensor]:"
	detectorReturn    = "return (boxes1, scores1, labels1)"
)

// DetectorVariant writes to dst a copy of the golden detector's TorchScript
// archive src whose forward is declared to return resultType and returns
// ret, so that tests can make modules that break the detector's contract
// without Python. The debug records are left out: they map the original
// code's source ranges. It returns dst.
func DetectorVariant(t testing.TB, src, dst, resultType, ret string) string {
	t.Helper()
	r, err := zip.OpenReader(src)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	files := map[string]string{}
	for _, f := range r.File {
		if strings.HasSuffix(f.Name, ".debug_pkl") {
			continue
		}
		text := string(readZipped(t, f))
		if strings.HasSuffix(f.Name, ".py") {
			if !strings.Contains(text, detectorSignature) || !strings.Contains(text, detectorReturn) {
				t.Fatalf("%s: %s: forward is not the golden detector's", src, f.Name)
			}
			text = strings.Replace(text, detectorSignature, "images: Tensor) -> "+resultType+":", 1)
			text = strings.Replace(text, detectorReturn, "return "+ret, 1)
		}
		files[f.Name] = text
	}
	WriteZip(t, dst, files)
	return dst
}

// WriteZip writes files into an uncompressed zip archive at path, as
// torch.jit.save and torch.save write theirs.
func WriteZip(t testing.TB, path string, files map[string]string) {
	t.Helper()
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := zip.NewWriter(out)
	for name, text := range files {
		e, err := w.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store})
		if err == nil {
			_, err = e.Write([]byte(text))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func readZipped(t testing.TB, f *zip.File) []byte {
	t.Helper()
	rc, err := f.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
