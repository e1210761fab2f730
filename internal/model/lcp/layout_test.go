package lcp

import (
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

func TestLayoutTokens(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	l := nn.NewLoader("layout", nn.Empty{}, torch.Options{})
	l.Init = nn.RandomInit(9, 0.1)
	layout := NewLayout(l.Root().Sub("position_net"), 32, 24, 32)
	g := torch.NewGenerator(10)
	boxes := torch.Rand(g, 1, 3, 4)
	masks := torch.New([]float32{1, 1, 0}, 1, 3)
	phrases, statics := torch.Randn(g, 1, 3, 32), torch.Randn(g, 1, 3, 24)

	text := layout.Forward(boxes, masks, phrases, statics)
	assertShape(t, text, 1, 3, 32)
	golden.Compare(t, "text tokens are GLIGEN's", text, layout.Net.Forward(boxes, masks, phrases), 0)

	layout.ImageTrained = true
	both := layout.Forward(boxes, masks, phrases, statics)
	assertShape(t, both, 1, 6, 32)
	golden.Compare(t, "text half", both.Narrow(1, 0, 3), text, 0)

	// An empty slot's tokens do not depend on what its inputs hold.
	junk := layout.Forward(torch.Rand(g, 1, 3, 4).Mul(masks.Rsub(1).Unsqueeze(-1)).Add(boxes.Mul(masks.Unsqueeze(-1))),
		masks, phrases.Add(torch.Randn(g, 1, 3, 32).Mul(masks.Rsub(1).Unsqueeze(-1))), statics.MulScalar(1))
	golden.Compare(t, "padding is inert", junk, both, 1e-6)
}

func assertShape(t *testing.T, x *torch.Tensor, want ...int64) {
	t.Helper()
	got := x.Shape()
	for i := range want {
		if len(got) != len(want) || got[i] != want[i] {
			t.Fatalf("shape %v, want %v", got, want)
		}
	}
}
