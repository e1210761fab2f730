package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

// The file ends whole and readable by all, replaces an older one, and
// leaves no temporary behind; a write into a missing folder fails and
// leaves nothing.
func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.json")
	for _, data := range []string{"old", "new"} {
		if err := WriteFile(path, []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != "new" {
		t.Fatalf("read %q, %v", b, err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("folder holds %d entries, want the file alone", len(entries))
	}
	if err := WriteFile(filepath.Join(dir, "no", "x"), []byte("x")); err == nil {
		t.Error("a missing folder was accepted")
	}
	if !IsTemp(".out.json.123.tmp") || IsTemp("out.json") {
		t.Error("IsTemp")
	}
}
