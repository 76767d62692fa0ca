package sampling

import "math"

// Uniformity is a goodness-of-fit test of sample counts against the uniform
// distribution: counts[i] is how many samples named node i.
type Uniformity struct {
	Samples int     // total of the counts
	Nodes   int     // categories (nodes that could be sampled)
	Chi2    float64 // Pearson's statistic: sum (c - e)^2 / e with e = Samples/Nodes
	DF      int     // degrees of freedom: Nodes - 1
	// P is the probability that a uniform sampler gives a statistic at least Chi2: the
	// counts pass a test at level alpha when P >= alpha.
	P float64
	// KL is the Kullback-Leibler divergence D(empirical || uniform) in bits. Finite
	// samples give a positive value even for a perfect sampler, about Floor.
	KL    float64
	Floor float64 // the expected KL of a perfect sampler: (Nodes-1) / (2 Samples ln 2)
	// MaxRatio and MinRatio are the largest and smallest count over the expected one.
	MaxRatio, MinRatio float64
}

// TestUniform computes the test for counts (at least two categories, some samples).
func TestUniform(counts []int) Uniformity {
	u := Uniformity{Nodes: len(counts), DF: len(counts) - 1, MinRatio: math.Inf(1)}
	for _, c := range counts {
		u.Samples += c
	}
	if u.Nodes < 2 || u.Samples == 0 {
		return Uniformity{Nodes: u.Nodes, Samples: u.Samples, P: 1}
	}
	e := float64(u.Samples) / float64(u.Nodes)
	for _, c := range counts {
		d := float64(c) - e
		u.Chi2 += d * d / e
		if c > 0 {
			p := float64(c) / float64(u.Samples)
			u.KL += p * math.Log2(p*float64(u.Nodes))
		}
		u.MaxRatio = math.Max(u.MaxRatio, float64(c)/e)
		u.MinRatio = math.Min(u.MinRatio, float64(c)/e)
	}
	u.P = ChiSquareSurvival(u.Chi2, u.DF)
	u.Floor = float64(u.Nodes-1) / (2 * float64(u.Samples) * math.Ln2)
	return u
}

// ChiSquareSurvival returns P(X >= x) for X chi-square distributed with k degrees of
// freedom: the regularized upper incomplete gamma function Q(k/2, x/2).
func ChiSquareSurvival(x float64, k int) float64 {
	if k <= 0 || math.IsNaN(x) {
		return math.NaN()
	}
	return gammaQ(float64(k)/2, x/2)
}

// gammaQ is the regularized upper incomplete gamma function, by its power series below
// a+1 and its continued fraction (evaluated with Lentz's method) above.
func gammaQ(a, x float64) float64 {
	if x <= 0 {
		return 1
	}
	lg, _ := math.Lgamma(a)
	logPre := a*math.Log(x) - x - lg // log(x^a e^-x / Gamma(a))
	if x < a+1 {
		// P(a, x) = x^a e^-x / Gamma(a) * sum_n x^n / (a (a+1) ... (a+n))
		term := 1 / a
		sum := term
		for n := 1; n < 100000; n++ {
			term *= x / (a + float64(n))
			sum += term
			if term < sum*1e-16 {
				break
			}
		}
		return math.Max(0, 1-sum*math.Exp(logPre))
	}
	// Q(a, x) = x^a e^-x / Gamma(a) * 1/(x+1-a- 1(1-a)/(x+3-a- 2(2-a)/(x+5-a- ...)))
	const tiny = 1e-300
	b := x + 1 - a
	c := 1 / tiny
	d := 1 / b
	f := d
	for i := 1; i < 100000; i++ {
		an := -float64(i) * (float64(i) - a)
		b += 2
		d = an*d + b
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = b + an/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		delta := d * c
		f *= delta
		if math.Abs(delta-1) < 1e-16 {
			break
		}
	}
	return math.Min(1, math.Exp(logPre)*f)
}
