package train

import (
	"github.com/lcpdiff/lcpdiff/internal/data"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Batch is one micro-batch of training samples.
type Batch struct {
	// Images are the target images [B, 3, H, W] in [-1, 1].
	Images *torch.Tensor
	// Captions are the prompts, one per image.
	Captions []string
	// Index is each sample's global index: its place in the run's sample
	// order, the same whichever rank of a data-parallel job reads it. It
	// keys the sample's random draws (see Draws).
	Index []int
	// Subjects are, per image, its annotated subjects: what the LCP
	// conditioner turns into static references, image tokens and
	// grounding tokens. A text-only conditioner ignores them.
	Subjects [][]Subject
	// Masks [B, 1, H, W] in {0, 1} are, per image, the union of its
	// subjects' masks, which subject_loss_weight weighs the loss by; nil
	// from a source without masks.
	Masks *torch.Tensor
}

// Subject is one annotated subject of a training image (DESIGN.md,
// Training): where it is, how the caption names it, and its two views.
type Subject struct {
	Box      [4]float64 // normalised x0, y0, x1, y1 in the target image
	Phrase   string     // the grounding phrase
	Category string     // for the static refiner's "a photo of a {category}"
	// Static is the static refiner's input: the subject's segment in the
	// target frame [3, H, W] in [-1, 1], background white, with its Mask
	// [1, H, W] in {0, 1}.
	Static, Mask *torch.Tensor
	// Dynamic is the DA-Encoder's input [3, h, w] in [-1, 1]: the same
	// subject in another frame of the clip, or for an image sample its
	// segment after colour jitter and geometric augmentation.
	Dynamic *torch.Tensor
	// Views are the same references as decoded images, which the LCP
	// conditioner hands to the encoders exactly as generation does.
	Views SubjectViews
}

// SubjectViews are a subject's references as images: Static (background
// white) with its Mask, and Dynamic.
type SubjectViews struct {
	Static, Dynamic *data.RGB
	Mask            *data.Gray
}

// Free releases the batch's tensors.
func (b *Batch) Free() {
	b.Images.Free()
	b.Masks.Free()
	for _, subjects := range b.Subjects {
		for _, s := range subjects {
			s.Static.Free()
			s.Mask.Free()
			s.Dynamic.Free()
		}
	}
}

// Batches is a training data source. Next hands over batches the loop
// frees; it never runs dry (a finite data set starts another epoch), so
// an error means the data is broken.
//
// The source hands out the run's samples in a fixed global order, global
// sample g depending only on the source's seed and g. Shard(rank, world)
// makes it hand out only rank's share from its position on: global
// samples p+rank, p+rank+world, p+rank+2·world, ..., so that world ranks
// taking B samples a batch see, together, exactly the samples one process
// taking B·world a batch would.
//
// State and Restore make a resumed run see exactly the batches the
// interrupted one would have seen next: State, called between batches,
// encodes the global position (the samples every rank has taken, the
// ranks moving in step) and Restore, on a freshly made source over the
// same data, returns to it, keeping the shard. Any rank's state is
// therefore the job's, and a resumed job may even have another number of
// ranks. A source that prefetches reports the position of what it has
// handed out, not of what it has read ahead.
type Batches interface {
	Next() (*Batch, error)
	State() ([]byte, error)
	Restore(state []byte) error
	Shard(rank, world int) error
}

// Conditioner prepares the UNet for one micro-batch and takes the
// preparation down again afterwards.
//
// Condition returns the text context [B, 77, D] the UNet cross-attends to
// and sets whatever state the attached adapter reads during the forward
// pass (static references, image tokens, grounding tokens). Tensors that
// derive from trainable parameters must be computed with autograd on (it
// is, inside Run) so that their gradients reach them; frozen encoders may
// run under torch.NoGrad. Random decisions, such as condition dropout,
// take the rows' own numbers from d, so that a sample is decided alike
// however the job is split into ranks and after a resume. Clear, called
// after the backward pass, resets the adapter.
type Conditioner interface {
	Condition(b *Batch, d Draws) (context *torch.Tensor, err error)
	Clear()
}
