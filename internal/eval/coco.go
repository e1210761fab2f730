// Package eval computes the paper's evaluation metrics (Sec. IV-A): the
// DreamBench similarity scores and COCO box AP of a detector's boxes against
// the requested layout.
package eval

import (
	"cmp"
	"slices"
)

// GroundTruth is one ground-truth box, as in a COCO annotation file.
type GroundTruth struct {
	ImageID, CategoryID int
	// Box is [x, y, w, h] in pixels, COCO's "bbox".
	Box [4]float64
	// Area places the box in the small / medium / large ranges. COCOeval
	// reads it from the annotation's "area" field (the segmentation's
	// area in real COCO data), not from the box. Zero means "unset" and
	// uses Box's w*h, which is what a box-only annotation stores; a zero
	// area cannot occur in a COCO file that pycocotools accepts, since it
	// requires the field.
	Area float64
	// IsCrowd marks a region of many objects: detections inside it are
	// neither true nor false positives (see EvaluateBoxes).
	IsCrowd bool
}

// Detection is one detected box, as in a COCO results file.
type Detection struct {
	ImageID, CategoryID int
	// Box is [x, y, w, h] in pixels. Its w*h is the detection's area, as
	// COCO.loadRes sets it.
	Box   [4]float64
	Score float64
}

// PixelBox converts a box given as normalised x0, y0, x1, y1 (the
// project's convention) to COCO's [x, y, w, h] in pixels of a width x
// height image. The corners are scaled first, so boxes that share an edge
// in normalised form still share it in pixels.
func PixelBox(norm [4]float64, width, height int) [4]float64 {
	w, h := float64(width), float64(height)
	// The conversions keep x1 - x0 from fusing into an FMA, so the width
	// is the difference of the two corners as stored.
	x0, y0 := float64(norm[0]*w), float64(norm[1]*h)
	x1, y1 := float64(norm[2]*w), float64(norm[3]*h)
	return [4]float64{x0, y0, x1 - x0, y1 - y0}
}

// Stats are the twelve numbers COCOeval.summarize prints, in its order.
// Each is -1 where it is undefined: no category has a non-ignored ground
// truth in that area range.
type Stats struct {
	AP, AP50, AP75             float64 // IoU .50:.95, .50 and .75; all areas, 100 detections
	APSmall, APMedium, APLarge float64 // IoU .50:.95, 100 detections
	AR1, AR10, AR100           float64 // IoU .50:.95, all areas, at most 1, 10, 100 detections
	ARSmall, ARMedium, ARLarge float64 // IoU .50:.95, 100 detections

	// CategoryIDs are the evaluated categories, ascending, and CategoryAP
	// their AP at IoU .50:.95 over all areas with 100 detections (-1 for a
	// category without ground truth). pycocotools has no such output; the
	// mean of the values that are not -1 is AP.
	CategoryIDs []int
	CategoryAP  []float64
}

// Array returns the twelve stats in COCOeval's order (its E.stats).
func (s Stats) Array() [12]float64 {
	return [12]float64{
		s.AP, s.AP50, s.AP75, s.APSmall, s.APMedium, s.APLarge,
		s.AR1, s.AR10, s.AR100, s.ARSmall, s.ARMedium, s.ARLarge,
	}
}

// COCOeval's default parameters for iouType "bbox".
var (
	// iouThresholds and recallThresholds are built like np.linspace, whose
	// i-th value is i*step + start: the ninth IoU threshold is
	// 0.8999999999999999, not 0.9, and a recall that lands exactly on a
	// threshold is compared with that value.
	iouThresholds    = linspace(0.5, 0.95, 10)
	recallThresholds = linspace(0, 1, 101)
	maxDetections    = [...]int{1, 10, 100}
	// areaRanges are all, small, medium, large in pixels². COCOeval
	// ignores a box when area < lo or area > hi, so both ends belong to
	// the range: an area of exactly 32² is small and medium.
	areaRanges = [...][2]float64{{0, 1e10}, {0, 32 * 32}, {32 * 32, 96 * 96}, {96 * 96, 1e10}}
)

const (
	areaAll, areaSmall, areaMedium, areaLarge = 0, 1, 2, 3
	numIoU, numRecall                         = 10, 101
	numArea, numMaxDet                        = len(areaRanges), len(maxDetections)
)

// linspace is np.linspace(start, stop, n) for n > 1, value for value.
func linspace(start, stop float64, n int) []float64 {
	step := (stop - start) / float64(n-1)
	out := make([]float64, n)
	for i := range out {
		// The conversion forbids fusing into an FMA, which numpy does not do.
		out[i] = float64(float64(i)*step) + start
	}
	out[n-1] = stop
	return out
}

// EvaluateBoxes runs pycocotools' COCOeval with iouType "bbox" and its
// default parameters (evaluate, accumulate, summarize) and returns the
// summary. imageIDs and categoryIDs play the part of the ground-truth
// file's "images" and "categories" lists: boxes of other images or
// categories are left out. Either may be nil to mean every ID that occurs
// in gts or dets, which gives the same numbers as listing the ground
// truth's images and categories (an image or category without boxes adds
// nothing, and pycocotools refuses detections on unknown images).
//
// Matching follows COCOeval.evaluateImg: per image and category, the
// detections, highest score first, each take the unmatched ground truth
// with the highest IoU >= the threshold, preferring any ground truth that
// is not ignored (crowd, or Area outside the range) to one that is, however
// much better the ignored one overlaps. Crowd ground truths are compared
// by intersection over the detection's area, stay matchable after a
// match, and are ignored, so a detection matched to one is neither a true
// nor a false positive.
func EvaluateBoxes(gts []GroundTruth, dets []Detection, imageIDs, categoryIDs []int) Stats {
	return Evaluate(gts, dets, imageIDs, categoryIDs).Stats()
}

// Evaluation holds COCOeval's accumulated arrays, eval["precision"] and
// eval["recall"], with their index order: t over the IoU thresholds
// .50:.05:.95, r over the recall thresholds 0:.01:1, k over CategoryIDs, a
// over the area ranges all, small, medium, large, and m over the maximum
// detection counts 1, 10, 100 per image.
type Evaluation struct {
	ImageIDs, CategoryIDs []int // ascending, without duplicates

	precision []float64 // [t][r][k][a][m]
	recall    []float64 // [t][k][a][m]
}

// Precision is the interpolated precision eval["precision"][t, r, k, a, m]
// (see Evaluation for the indices): -1 where the category has no
// non-ignored ground truth, 0 at recalls the detections never reach.
func (e *Evaluation) Precision(t, r, k, a, m int) float64 {
	return e.precision[(((t*numRecall+r)*len(e.CategoryIDs)+k)*numArea+a)*numMaxDet+m]
}

// Recall is the final recall eval["recall"][t, k, a, m], -1 where the
// category has no non-ignored ground truth.
func (e *Evaluation) Recall(t, k, a, m int) float64 {
	return e.recall[((t*len(e.CategoryIDs)+k)*numArea+a)*numMaxDet+m]
}

// Evaluate runs COCOeval's evaluate and accumulate steps on the same input
// as EvaluateBoxes and returns the arrays that Stats summarises.
func Evaluate(gts []GroundTruth, dets []Detection, imageIDs, categoryIDs []int) *Evaluation {
	if imageIDs == nil {
		imageIDs = idsOf(gts, dets, func(g GroundTruth) int { return g.ImageID }, func(d Detection) int { return d.ImageID })
	}
	if categoryIDs == nil {
		categoryIDs = idsOf(gts, dets, func(g GroundTruth) int { return g.CategoryID }, func(d Detection) int { return d.CategoryID })
	}
	e := &Evaluation{ImageIDs: unique(imageIDs), CategoryIDs: unique(categoryIDs)}
	K := len(e.CategoryIDs)
	e.precision = filled(numIoU*numRecall*K*numArea*numMaxDet, -1)
	e.recall = filled(numIoU*K*numArea*numMaxDet, -1)

	cells := group(gts, dets, e.ImageIDs, e.CategoryIDs)
	for k := range K {
		for a := range numArea {
			// The images of this category and area, in ascending image-ID
			// order; nil where the image has neither boxes nor detections.
			images := make([]*imageResult, len(e.ImageIDs))
			for i := range e.ImageIDs {
				c := cells[k*len(e.ImageIDs)+i]
				if c != nil {
					images[i] = c.evaluate(areaRanges[a])
				}
			}
			for m, maxDet := range maxDetections {
				e.accumulate(k, a, m, images, maxDet)
			}
		}
	}
	return e
}

// Stats summarises the evaluation like COCOeval.summarize.
func (e *Evaluation) Stats() Stats {
	all := allIndices(numIoU)
	last := numMaxDet - 1
	s := Stats{
		AP:       e.meanPrecision(all, areaAll, last),
		AP50:     e.meanPrecision([]int{thresholdIndex(0.5)}, areaAll, last),
		AP75:     e.meanPrecision([]int{thresholdIndex(0.75)}, areaAll, last),
		APSmall:  e.meanPrecision(all, areaSmall, last),
		APMedium: e.meanPrecision(all, areaMedium, last),
		APLarge:  e.meanPrecision(all, areaLarge, last),
		AR1:      e.meanRecall(areaAll, 0),
		AR10:     e.meanRecall(areaAll, 1),
		AR100:    e.meanRecall(areaAll, last),
		ARSmall:  e.meanRecall(areaSmall, last),
		ARMedium: e.meanRecall(areaMedium, last),
		ARLarge:  e.meanRecall(areaLarge, last),

		CategoryIDs: slices.Clone(e.CategoryIDs),
		CategoryAP:  make([]float64, len(e.CategoryIDs)),
	}
	for k := range e.CategoryIDs {
		var vals []float64
		for t := range numIoU {
			for r := range numRecall {
				vals = append(vals, e.Precision(t, r, k, areaAll, last))
			}
		}
		s.CategoryAP[k] = meanDefined(vals)
	}
	return s
}

// meanPrecision is _summarize(ap=1): the mean over the given thresholds,
// all recall points and all categories of the defined precisions, in
// numpy's C order (t, r, k) so the sum rounds as np.mean's does.
func (e *Evaluation) meanPrecision(thresholds []int, a, m int) float64 {
	var vals []float64
	for _, t := range thresholds {
		for r := range numRecall {
			for k := range e.CategoryIDs {
				vals = append(vals, e.Precision(t, r, k, a, m))
			}
		}
	}
	return meanDefined(vals)
}

// meanRecall is _summarize(ap=0) over all IoU thresholds.
func (e *Evaluation) meanRecall(a, m int) float64 {
	var vals []float64
	for t := range numIoU {
		for k := range e.CategoryIDs {
			vals = append(vals, e.Recall(t, k, a, m))
		}
	}
	return meanDefined(vals)
}

// thresholdIndex finds an IoU threshold the way summarize does, by exact
// equality (np.where(iouThr == p.iouThrs)); .5 and .75 are exact.
func thresholdIndex(iou float64) int {
	return slices.Index(iouThresholds, iou)
}

// meanDefined is np.mean(s[s > -1]), or -1 when nothing is defined.
func meanDefined(vals []float64) float64 {
	defined := slices.DeleteFunc(vals, func(v float64) bool { return !(v > -1) })
	if len(defined) == 0 {
		return -1
	}
	return pairwiseSum(defined) / float64(len(defined))
}

// pairwiseSum adds like numpy's add.reduce on a contiguous float64 array
// (pairwise summation, blocks of 128 summed in 8 interleaved partial
// sums, starting from the identity 0), so means agree with np.mean to the
// last bit: the golden stats match bitwise, where a plain loop is off by
// up to 8e-15 and starting from the first element by 1e-18.
func pairwiseSum(a []float64) float64 {
	n := len(a)
	switch {
	case n < 8:
		res := 0.0
		for _, v := range a {
			res += v
		}
		return res
	case n <= 128:
		var r [8]float64
		copy(r[:], a)
		i := 8
		for ; i < n-n%8; i += 8 {
			for j := range r {
				r[j] += a[i+j]
			}
		}
		res := ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
		for ; i < n; i++ {
			res += a[i]
		}
		return res
	default:
		n2 := n / 2
		n2 -= n2 % 8
		return pairwiseSum(a[:n2]) + pairwiseSum(a[n2:])
	}
}

func idsOf(gts []GroundTruth, dets []Detection, g func(GroundTruth) int, d func(Detection) int) []int {
	ids := make([]int, 0, len(gts)+len(dets))
	for _, x := range gts {
		ids = append(ids, g(x))
	}
	for _, x := range dets {
		ids = append(ids, d(x))
	}
	return ids
}

// unique is np.unique: sorted, without duplicates.
func unique(ids []int) []int {
	out := slices.Clone(ids)
	slices.Sort(out)
	return slices.Compact(out)
}

func filled(n int, v float64) []float64 {
	s := make([]float64, n)
	for i := range s {
		s[i] = v
	}
	return s
}

func allIndices(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}

// byScore orders detections like np.argsort(-score, kind="mergesort"):
// highest score first, ties in their current order when used with a
// stable sort, and NaN scores last (cmp.Compare puts NaN below every
// number, as numpy's sort puts it after every number).
func byScore(a, b float64) int { return cmp.Compare(b, a) }

func b1(v bool) int {
	if v {
		return 1
	}
	return 0
}
