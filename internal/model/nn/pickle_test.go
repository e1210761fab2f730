package nn

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// The fixtures in testdata/ come from testdata/make_pickles.py; the
// adversarial pickles are written here, opcode by opcode.

type fixtureTensor struct {
	dtype  torch.DType
	shape  []int64
	values []float64
}

func openPickle(t *testing.T, path string) *Pickle {
	t.Helper()
	p, err := OpenPickle(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// checkTensors reads every key of p and compares it with want, exactly:
// each fixture value is representable in its dtype and in float64.
func checkTensors(t *testing.T, p *Pickle, want map[string]fixtureTensor) {
	t.Helper()
	var wantKeys []string
	for k := range want {
		wantKeys = append(wantKeys, k)
	}
	slices.Sort(wantKeys)
	if got := p.Keys(); !slices.Equal(got, wantKeys) {
		t.Fatalf("keys:\n got %q\nwant %q", got, wantKeys)
	}
	for key, w := range want {
		if shape, ok := p.Shape(key); !ok || !slices.Equal(shape, w.shape) {
			t.Errorf("%s: Shape = %v, %v; want %v", key, shape, ok, w.shape)
		}
		x, err := p.Tensor(key)
		if err != nil {
			t.Errorf("%s: %v", key, err)
			continue
		}
		if x.DType() != w.dtype || !slices.Equal(x.Shape(), w.shape) {
			t.Errorf("%s: got %v %v, want %v %v", key, x.DType(), x.Shape(), w.dtype, w.shape)
		} else if got := x.To(torch.Float64).Float64s(); !slices.Equal(got, w.values) {
			t.Errorf("%s: values\n got %v\nwant %v", key, got, w.values)
		}
		x.Free()
	}
}

// fixtures are the fixtureTensors of one file: those whose key starts with
// file+":", or, for "", those with no file.
func fixtures(file string) map[string]fixtureTensor {
	out := map[string]fixtureTensor{}
	for k, v := range fixtureTensors {
		f, key, ok := strings.Cut(k, ":")
		if !ok {
			f, key = "", k
		}
		if f == file {
			out[key] = v
		}
	}
	return out
}

func TestPickleStateDict(t *testing.T) {
	// Every dtype; a scalar and an empty tensor; transposed, permuted,
	// expanded, offset and stepped views; views sharing a storage; a
	// Parameter; nested dicts, an OrderedDict, a list, a tuple, an int key;
	// one tensor under two keys; and numbers, strings and None beside them.
	checkTensors(t, openPickle(t, "testdata/state_dict.pth"), fixtures(""))
}

func TestPickleUnwrapsTrainingCheckpoint(t *testing.T) {
	// Beside its state_dict, the checkpoint holds an argparse.Namespace and
	// plain metadata.
	checkTensors(t, openPickle(t, "testdata/lightning.ckpt"), fixtures("lightning"))
}

func TestPickleProtocol4(t *testing.T) {
	// Frames, STACK_GLOBAL and MEMOIZE, as torch.save(..., pickle_protocol=4) writes.
	checkTensors(t, openPickle(t, "testdata/protocol4.pth"), fixtures("protocol4"))
}

func TestPickleRefusesCodeExecution(t *testing.T) {
	const marker = "/tmp/pwned-lcpdiff"
	os.Remove(marker)
	_, err := OpenPickle("testdata/malicious.pth")
	var refused *UnsafeGlobalError
	if !errors.As(err, &refused) {
		t.Fatalf("got %v, want an UnsafeGlobalError", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "posix.system") || !strings.Contains(msg, "testdata/malicious.pth") {
		t.Errorf("error %q should name posix.system and the file", msg)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Errorf("%s exists: the payload ran", marker)
	}
}

func TestPickleRefusesMetadataClasses(t *testing.T) {
	_, err := OpenPickle("testdata/callbacks.ckpt")
	if err == nil || !strings.Contains(err.Error(), "datetime.timedelta") || !strings.Contains(err.Error(), "state_dict") {
		t.Errorf("got %v, want a refusal of datetime.timedelta that suggests extracting the state_dict", err)
	}
}

func TestPickleLegacyFormat(t *testing.T) {
	_, err := OpenPickle("testdata/legacy.pth")
	if !errors.Is(err, errLegacyFormat) || !strings.Contains(err.Error(), "testdata/legacy.pth") {
		t.Errorf("got %v, want the legacy-format error naming the file", err)
	}
}

func TestPickleCorruptArchive(t *testing.T) {
	b, err := os.ReadFile("testdata/state_dict.pth")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "truncated.pth")
	if err := os.WriteFile(path, b[:len(b)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenPickle(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("truncated archive: got %v, want an error naming the file", err)
	}

	path = writeArchive(t, "nopickle", nil, nil)
	if _, err := OpenPickle(path); err == nil || !strings.Contains(err.Error(), "data.pkl") {
		t.Errorf("archive without data.pkl: got %v", err)
	}
}

// pk writes a pickle by hand (protocol 2, as torch.save does).
type pk struct{ bytes.Buffer }

func newPK() *pk {
	p := &pk{}
	p.Write([]byte{0x80, 2})
	return p
}

func (p *pk) ops(s string) *pk { p.WriteString(s); return p }

func (p *pk) str(s string) *pk {
	p.WriteByte('X')
	binary.Write(p, binary.LittleEndian, uint32(len(s)))
	p.WriteString(s)
	return p
}

func (p *pk) int(n int) *pk {
	p.WriteByte('J')
	binary.Write(p, binary.LittleEndian, int32(n))
	return p
}

func (p *pk) global(module, name string) *pk { return p.ops("c" + module + "\n" + name + "\n") }

func (p *pk) ints(ns ...int64) *pk {
	p.ops("(")
	for _, n := range ns {
		p.int(int(n))
	}
	return p.ops("t")
}

// tensor writes _rebuild_tensor_v2 over storage key of FloatStorage.
func (p *pk) tensor(key string, numel int, offset int, shape, stride []int64) *pk {
	p.global("torch._utils", "_rebuild_tensor_v2").ops("(")
	p.ops("(").str("storage").global("torch", "FloatStorage").str(key).str("cpu").int(numel).ops("tQ")
	p.int(offset).ints(shape...).ints(stride...).ops("\x89")
	p.global("collections", "OrderedDict").ops(")R")
	return p.ops("tR")
}

// writeArchive lays a pickle and storages out as torch.save does. A nil
// pickle leaves data.pkl out.
func writeArchive(t *testing.T, name string, pickle []byte, storages map[string][]byte) string {
	t.Helper()
	var buf bytes.Buffer
	w := zip.NewWriter(&buf)
	add := func(entry string, data []byte) {
		f, err := w.CreateHeader(&zip.FileHeader{Name: name + "/" + entry, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		f.Write(data)
	}
	if pickle != nil {
		add("data.pkl", pickle)
	}
	for k, v := range storages {
		add("data/"+k, v)
	}
	add("version", []byte("3\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name+".pth")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func f32Bytes(vs ...float32) []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, vs)
	return b.Bytes()
}

func TestPickleRefusesGlobals(t *testing.T) {
	for _, c := range []struct{ name, global, pickle string }{
		{"eval by STACK_GLOBAL", "builtins.eval",
			"\x80\x04\x8c\x08builtins\x8c\x04eval\x93\x8c\x031+1\x85R."},
		{"exec by GLOBAL", "__builtin__.exec", "c__builtin__\nexec\nX\x01\x00\x00\x001\x85R."},
		{"Popen by INST", "subprocess.Popen", "(X\x02\x00\x00\x00lsisubprocess\nPopen\n."},
		{"Popen by NEWOBJ", "subprocess.Popen", "\x80\x02csubprocess\nPopen\n)\x81."},
		{"nested torch.load", "torch.storage._load_from_bytes", "ctorch.storage\n_load_from_bytes\nC\x01x\x85R."},
		{"numpy array", "numpy.core.multiarray._reconstruct", "cnumpy.core.multiarray\n_reconstruct\n."},
		{"bytes of protocol 2", "_codecs.encode", "c_codecs\nencode\nX\x01\x00\x00\x00aX\x06\x00\x00\x00latin1\x86R."},
		{"untyped storage", "torch.UntypedStorage", "ctorch\nUntypedStorage\n."},
		// gopickle resolves these two itself; they may not stay as values.
		{"bare object", "__builtin__.object", "}X\x01\x00\x00\x00ac__builtin__\nobject\ns."},
		{"bare reconstructor", "copy_reg._reconstructor", "}X\x01\x00\x00\x00accopy_reg\n_reconstructor\ns."},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := OpenPickle(writeArchive(t, "evil", []byte(c.pickle), nil))
			var refused *UnsafeGlobalError
			if !errors.As(err, &refused) || refused.Module+"."+refused.Name != c.global {
				t.Errorf("got %v, want a refusal of %s", err, c.global)
			}
		})
	}
}

func TestPickleMalformed(t *testing.T) {
	storage := map[string][]byte{"0": f32Bytes(1, 2, 3, 4)}
	dict := func(key string) *pk { return newPK().ops("}").str(key) }
	for _, c := range []struct{ name, want string }{
		{"no STOP", "STOP"},
		{"huge string", "past the end"},
		{"huge frame", "past the end"},
		{"empty LONG1", "malformed pickle"},
		{"list holding itself", "deep"},
		{"not a dict", "not a dict"},
		{"function as a value", "not data"},
		{"view past its storage", "reaches element 4"},
		{"view with negative offset", "offset"},
		{"missing storage", `storage "9" is missing`},
		{"storage shorter than declared", "should hold 5"},
	} {
		var pickle []byte
		switch c.name {
		case "no STOP":
			pickle = newPK().ops("}").Bytes()
		case "huge string":
			pickle = append(newPK().ops("\x8d").Bytes(), 0, 0, 0, 0, 0, 1, 0, 0)
		case "huge frame":
			pickle = append([]byte{0x80, 4, 0x95}, 0, 0, 0, 0, 0, 1, 0, 0, '}', '.')
		case "empty LONG1":
			pickle = newPK().ops("\x8a\x00.").Bytes()
		case "list holding itself":
			pickle = newPK().ops("}X\x01\x00\x00\x00a]q\x01h\x01as.").Bytes()
		case "not a dict":
			pickle = newPK().ops("].").Bytes()
		case "function as a value":
			pickle = dict("f").global("torch._utils", "_rebuild_tensor_v2").ops("s.").Bytes()
		case "view past its storage":
			pickle = dict("w").tensor("0", 4, 1, []int64{2, 2}, []int64{2, 1}).ops("s.").Bytes()
		case "view with negative offset":
			pickle = dict("w").tensor("0", 4, -1, []int64{1}, []int64{1}).ops("s.").Bytes()
		case "missing storage":
			pickle = dict("w").tensor("9", 4, 0, []int64{4}, []int64{1}).ops("s.").Bytes()
		case "storage shorter than declared":
			pickle = dict("w").tensor("0", 5, 0, []int64{4}, []int64{1}).ops("s.").Bytes()
		}
		t.Run(c.name, func(t *testing.T) {
			path := writeArchive(t, "bad", pickle, storage)
			_, err := OpenPickle(path)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
				t.Errorf("got %v, want an error naming the file and saying %q", err, c.want)
			}
		})
	}
}

func TestPickleUnwrapsOnlyTheOneTensorContainer(t *testing.T) {
	storage := map[string][]byte{"0": f32Bytes(1, 2, 3, 4)}
	w := func(p *pk) *pk { return p.tensor("0", 4, 0, []int64{2, 2}, []int64{2, 1}) }

	model := w(newPK().ops("}(").str("epoch").int(1).str("model").ops("}").str("w")).ops("su.")
	p := openPickle(t, writeArchive(t, "model", model.Bytes(), storage))
	if got := p.Keys(); !slices.Equal(got, []string{"w"}) {
		t.Errorf("model checkpoint: keys %q, want [w]", got)
	}

	// An optimizer's state holds tensors too: nothing is unwrapped.
	both := w(newPK().ops("}(").str("model").ops("}").str("w")).ops("s")
	both = w(both.str("optimizer").ops("}").int(0)).ops("su.")
	p = openPickle(t, writeArchive(t, "both", both.Bytes(), storage))
	if got := p.Keys(); !slices.Equal(got, []string{"model.w", "optimizer.0"}) {
		t.Errorf("model and optimizer: keys %q, want [model.w optimizer.0]", got)
	}
}

func TestPickleReadsLazily(t *testing.T) {
	// A compressed storage (torch.save never writes one, a re-zipped file
	// may) whose bytes are garbage: opening must not touch them, reading
	// must fail naming the file and the key.
	pickle := newPK().ops("}").str("w").tensor("0", 2, 0, []int64{2}, []int64{1}).ops("s.")
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	f, _ := zw.Create("lazy/data.pkl")
	f.Write(pickle.Bytes())
	f, _ = zw.CreateRaw(&zip.FileHeader{Name: "lazy/data/0", Method: zip.Deflate, CompressedSize64: 4, UncompressedSize64: 8})
	f.Write([]byte{0xff, 0xff, 0xff, 0xff})
	zw.Close()
	path := filepath.Join(t.TempDir(), "lazy.pth")
	os.WriteFile(path, buf.Bytes(), 0o644)

	p := openPickle(t, path)
	if _, err := p.Tensor("w"); err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), `"w"`) {
		t.Errorf("got %v, want a read error naming the file and the key", err)
	}
}

func TestPickleReadsCompressedStorage(t *testing.T) {
	pickle := newPK().ops("}").str("w").tensor("0", 4, 1, []int64{3}, []int64{1}).ops("s.")
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	f, _ := zw.Create("deflated/data.pkl")
	f.Write(pickle.Bytes())
	f, _ = zw.Create("deflated/data/0") // Create deflates
	f.Write(f32Bytes(1, 2, 3, 4))
	zw.Close()
	path := filepath.Join(t.TempDir(), "deflated.pth")
	os.WriteFile(path, buf.Bytes(), 0o644)

	checkTensors(t, openPickle(t, path), map[string]fixtureTensor{"w": {torch.Float32, []int64{3}, []float64{2, 3, 4}}})
}

// Open reads a torch.save file by its extension, through the safe reader,
// and a folder's PyTorch .bin weights stand in for missing safetensors.
func TestOpenPicksTheFormat(t *testing.T) {
	f, err := Open("testdata/state_dict.pth")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, ok := f.(*Pickle); !ok {
		t.Fatalf("Open(.pth) is a %T, want the pickle reader", f)
	}
	if _, err := Open("testdata/malicious.pth"); err == nil || !strings.Contains(err.Error(), "malicious.pth") {
		t.Errorf("a malicious .pth: %v", err)
	}
	dir := t.TempDir()
	b, err := os.ReadFile("testdata/protocol4.pth")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "diffusion_pytorch_model.bin"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	w, err := OpenWeights(dir, "diffusion_pytorch_model")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if len(w.Keys()) != len(fixtures("protocol4")) {
		t.Errorf("the .bin weights hold %d keys, want %d", len(w.Keys()), len(fixtures("protocol4")))
	}
}
