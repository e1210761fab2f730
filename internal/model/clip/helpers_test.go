package clip

import (
	"strings"
	"testing"
)

// checkLoad asserts how loading a tower went: it succeeds when want is nil,
// and otherwise fails with an error containing every string of want.
func checkLoad[M interface{ Free() }](t *testing.T, m M, err error, want []string) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatal(err)
		}
		m.Free()
		return
	}
	if err == nil {
		m.Free()
		t.Fatal("loaded")
	}
	for _, s := range want {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q lacks %q", err, s)
		}
	}
}
