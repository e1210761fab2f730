package nn

import (
	"archive/zip"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Pickle is a Source over a PyTorch checkpoint written by torch.save (the
// .pth, .bin and .ckpt files of the zip format, PyTorch 1.6 and later).
//
// Opening it unpickles data.pkl with an allowlist (see pickle_allowlist.go)
// and records where each tensor's bytes are; the storages themselves stay
// in the archive until Tensor asks for one, so opening a multi-gigabyte
// checkpoint costs little memory.
//
// Keys are the paths of the tensors in the pickled object, joined with
// ".": dict keys (strings or integers) and list or tuple indices, so
// {"a": {"b": t}} holds "a.b" and {"l": [t]} holds "l.0". The top level must
// be a dict. When its only entry that holds tensors is a dict named
// "state_dict" (Lightning and the original Stable Diffusion checkpoints) or
// "model", that entry is unwrapped: its keys are the Source's keys, and the
// rest (global_step, epoch, hyper-parameters) is ignored. Tensors that only
// a set, an argparse.Namespace or a dict key of another type leads to are
// not exposed.
type Pickle struct {
	// Path is the file, as given to OpenPickle.
	Path string

	file    *os.File
	tensors map[string]*pickledTensor
}

// pickledStorage is one storage file of the archive as the pickle refers to
// it: <archive>/data/<key>, holding numel little-endian elements of dtype.
type pickledStorage struct {
	key   string
	dtype torch.DType
	numel int64
	entry *zip.File
}

// pickledTensor is a strided view of a storage, in elements.
type pickledTensor struct {
	storage       *pickledStorage
	offset        int64
	shape, stride []int64
}

// maxPickleBytes bounds data.pkl, which holds the structure but no tensor
// data: a Stable Diffusion checkpoint's is about a megabyte.
const maxPickleBytes = 256 << 20

var errLegacyFormat = errors.New("legacy (pre-1.6) torch.save format is not supported; re-save with torch.save(..., _use_new_zipfile_serialization=True)")

// OpenPickle opens a torch.save checkpoint as a Source. It refuses, before
// building anything from it, a pickle that names any global outside the
// allowlist (an *UnsafeGlobalError): a checkpoint is code, and lcpdiff only
// runs the few functions that rebuild tensors and containers.
func OpenPickle(path string) (_ *Pickle, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	zr, err := zip.NewReader(f, st.Size())
	if err != nil {
		if isLegacyTorchSave(f) {
			return nil, fmt.Errorf("%s: %w", path, errLegacyFormat)
		}
		return nil, fmt.Errorf("%s: not a torch.save checkpoint (a zip archive): %w", path, err)
	}
	entries := make(map[string]*zip.File, len(zr.File))
	for _, e := range zr.File {
		entries[e.Name] = e
	}
	prefix, err := archivePrefix(zr.File)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if _, ok := entries[prefix+"constants.pkl"]; ok {
		return nil, fmt.Errorf("%s: a TorchScript archive (torch.jit.save), not a torch.save checkpoint", path)
	}
	if err := checkByteOrder(entries[prefix+"byteorder"]); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}

	pkl := entries[prefix+"data.pkl"]
	if pkl.UncompressedSize64 > maxPickleBytes {
		return nil, fmt.Errorf("%s: %s is %d bytes, more than the %d a checkpoint's structure needs", path, pkl.Name, pkl.UncompressedSize64, maxPickleBytes)
	}
	data, err := readEntry(pkl, maxPickleBytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	a := &torchArchive{prefix: prefix, entries: entries, storages: map[string]*pickledStorage{}}
	root, err := unpickleCheckpoint(data, a.storage)
	if err != nil {
		var refused *UnsafeGlobalError
		if errors.As(err, &refused) {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return nil, fmt.Errorf("%s: %s: %w", path, pkl.Name, err)
	}
	tensors, err := flattenCheckpoint(root)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &Pickle{Path: path, file: f, tensors: tensors}, nil
}

// torchArchive is the zip of a torch.save checkpoint while OpenPickle reads
// its pickle.
type torchArchive struct {
	prefix   string // "<archive>/"
	entries  map[string]*zip.File
	storages map[string]*pickledStorage
}

// storage resolves a persistent reference of the pickle to a storage file,
// checking that the file is as long as the pickle says; the bytes
// themselves wait for Tensor.
func (a *torchArchive) storage(key string, dtype torch.DType, numel int64) (*pickledStorage, error) {
	if s, ok := a.storages[key]; ok {
		if s.dtype != dtype {
			return nil, fmt.Errorf("storage %q is read both as %v and as %v", key, s.dtype, dtype)
		}
		return s, nil
	}
	e, ok := a.entries[a.prefix+"data/"+key]
	if !ok {
		return nil, fmt.Errorf("storage %q is missing from the archive", key)
	}
	if numel < 0 || uint64(numel) > e.UncompressedSize64/uint64(dtype.Size()) {
		return nil, fmt.Errorf("storage %q should hold %d %v elements but has %d bytes", key, numel, dtype, e.UncompressedSize64)
	}
	s := &pickledStorage{key: key, dtype: dtype, numel: numel, entry: e}
	a.storages[key] = s
	return s, nil
}

// readEntry reads a whole (small) file of the archive, at most limit bytes.
func readEntry(e *zip.File, limit int64) ([]byte, error) {
	rc, err := e.Open()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", e.Name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, limit))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", e.Name, err)
	}
	return b, nil
}

// archivePrefix finds the folder torch.save put everything in: the one
// that holds data.pkl. It is named after the file as it was first saved,
// so a renamed checkpoint's cannot be guessed.
func archivePrefix(files []*zip.File) (string, error) {
	var found []string
	for _, e := range files {
		dir, ok := strings.CutSuffix(e.Name, "/data.pkl")
		if ok && dir != "" && !strings.Contains(dir, "/") {
			found = append(found, dir+"/")
		}
	}
	switch len(found) {
	case 0:
		return "", errors.New("no <archive>/data.pkl in the zip: not a torch.save checkpoint")
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("the zip holds %d data.pkl files (%s), a torch.save checkpoint one", len(found), strings.Join(found, ", "))
}

// checkByteOrder refuses a big-endian archive: storages are read as
// little-endian. Older archives have no byteorder record, and are
// little-endian.
func checkByteOrder(e *zip.File) error {
	if e == nil {
		return nil
	}
	b, err := readEntry(e, 16)
	if err != nil {
		return err
	}
	if order := strings.TrimSpace(string(b)); order != "little" {
		return fmt.Errorf("storages are %q-endian; only little-endian checkpoints are supported", order)
	}
	return nil
}

// Close closes the file (as Files.Close does, with nothing to report);
// tensors already read stay valid.
func (p *Pickle) Close() { p.file.Close() }

func (p *Pickle) Keys() []string {
	keys := make([]string, 0, len(p.tensors))
	for k := range p.tensors {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (p *Pickle) Shape(key string) ([]int64, bool) {
	t, ok := p.tensors[key]
	if !ok {
		return nil, false
	}
	return slices.Clone(t.shape), true
}

// Tensor reads key's elements from the archive into a new contiguous CPU
// tensor.
func (p *Pickle) Tensor(key string) (*torch.Tensor, error) {
	t, ok := p.tensors[key]
	if !ok {
		return nil, fmt.Errorf("%s: no tensor %q", p.Path, key)
	}
	b, err := p.read(t)
	if err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", p.Path, key, err)
	}
	var out *torch.Tensor
	if err := torch.Try(func() { out = torch.FromBytes(b, t.storage.dtype, t.shape...) }); err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", p.Path, key, err)
	}
	return out, nil
}

// read returns t's elements in row-major order, reading only the span of
// the storage that the view covers (a tensor that shares a storage with
// others does not pull in theirs).
func (p *Pickle) read(t *pickledTensor) ([]byte, error) {
	es := int64(t.storage.dtype.Size())
	if elementCount(t.shape) == 0 {
		return nil, nil
	}
	span, err := p.readStorage(t.storage, t.offset*es, (t.lastIndex()+1)*es)
	if err != nil {
		return nil, fmt.Errorf("storage %q: %w", t.storage.key, err)
	}
	if t.contiguous() {
		return span, nil
	}
	return gatherStrided(span, es, t.shape, t.stride), nil
}

// readStorage reads n bytes from start of a storage file. torch.save stores
// them uncompressed, so the common case is one ReadAt of just those bytes;
// an archive someone re-zipped with compression is decompressed up to them.
func (p *Pickle) readStorage(s *pickledStorage, start, n int64) ([]byte, error) {
	buf := make([]byte, n)
	if s.entry.Method == zip.Store {
		off, err := s.entry.DataOffset()
		if err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(io.NewSectionReader(p.file, off+start, n), buf); err != nil {
			return nil, err
		}
		return buf, nil
	}
	rc, err := s.entry.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if _, err := io.CopyN(io.Discard, rc, start); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(rc, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// lastIndex is the storage index of t's last element relative to its first
// (t must have elements).
func (t *pickledTensor) lastIndex() int64 {
	var last int64
	for d, n := range t.shape {
		last += (n - 1) * t.stride[d]
	}
	return last
}

// contiguous reports whether t's elements lie row-major and back to back;
// the stride of a dimension of size 1 does not matter, as it never steps.
func (t *pickledTensor) contiguous() bool {
	want := int64(1)
	for d := len(t.shape) - 1; d >= 0; d-- {
		if t.shape[d] != 1 && t.stride[d] != want {
			return false
		}
		want *= t.shape[d]
	}
	return true
}

// gatherStrided copies the elements of a strided view out of src, which starts at
// the view's first element, into a new row-major buffer: libtorch could do
// it from a strided tensor, but the tensor layer has no way to make one
// over raw bytes. Rows whose elements are adjacent are copied whole.
func gatherStrided(src []byte, es int64, shape, stride []int64) []byte {
	out := make([]byte, 0, elementCount(shape)*es)
	nd := len(shape)
	if nd == 0 {
		return append(out, src[:es]...)
	}
	inner, innerStride := shape[nd-1], stride[nd-1]
	idx := make([]int64, nd-1) // position in the outer dimensions
	for {
		var base int64
		for d, i := range idx {
			base += i * stride[d]
		}
		if innerStride == 1 {
			out = append(out, src[base*es:(base+inner)*es]...)
		} else {
			for i := range inner {
				at := (base + i*innerStride) * es
				out = append(out, src[at:at+es]...)
			}
		}
		d := nd - 2
		for ; d >= 0; d-- {
			if idx[d]++; idx[d] < shape[d] {
				break
			}
			idx[d] = 0
		}
		if d < 0 {
			return out
		}
	}
}

func elementCount(shape []int64) int64 {
	n := int64(1)
	for _, s := range shape {
		n *= s
	}
	return n
}
