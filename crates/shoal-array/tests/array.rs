//! Arrays against plain `ndarray` evaluation: random shapes, random
//! chunkings, every operation.

use std::sync::OnceLock;

use ndarray::{ArrayD, Axis, IxDyn, SliceInfoElem, s};
use proptest::prelude::*;
use shoal_array::{self as array, Array, ArrayError, Chunks, RandomState, Reduction};
use shoal_client::Client;

fn client() -> &'static Client {
    static CLIENT: OnceLock<Client> = OnceLock::new();
    CLIENT.get_or_init(|| Client::builder().threads(2).build().expect("thread pool"))
}

fn compute<T: array::Element>(a: &Array<T>) -> ArrayD<T> {
    a.compute_with(client()).unwrap_or_else(|e| panic!("compute failed: {e}"))
}

/// Equal within `tol` relative (NaN equals NaN).
fn assert_close(got: &ArrayD<f64>, want: &ArrayD<f64>, tol: f64) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.shape(), want.shape());
    for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
        let same = (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= tol * w.abs().max(1.0);
        prop_assert!(same, "element {i}: got {g}, want {w}");
    }
    Ok(())
}

/// A shape of 1 to 3 axes and a block size per axis.
fn shape_and_blocks() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    proptest::collection::vec(1usize..7, 1..4).prop_flat_map(|shape| {
        let blocks = shape.iter().map(|&n| 1..=n).collect::<Vec<_>>();
        (Just(shape), blocks)
    })
}

/// Data of a shape, chunked: the array and its plain twin.
fn data() -> impl Strategy<Value = (ArrayD<f64>, Vec<usize>)> {
    shape_and_blocks().prop_flat_map(|(shape, blocks)| {
        let n: usize = shape.iter().product();
        proptest::collection::vec(-1.5f64..1.5, n).prop_map(move |values| {
            (ArrayD::from_shape_vec(IxDyn(&shape), values).expect("sizes agree"), blocks.clone())
        })
    })
}

type Unary = (&'static str, fn(&Array<f64>) -> Array<f64>, fn(f64) -> f64);

fn unary_ops() -> Vec<Unary> {
    vec![
        ("sin", array::sin, f64::sin),
        ("cos", array::cos, f64::cos),
        ("tan", array::tan, f64::tan),
        ("arcsin", array::arcsin, f64::asin),
        ("arccos", array::arccos, f64::acos),
        ("arctan", array::arctan, f64::atan),
        ("sinh", array::sinh, f64::sinh),
        ("cosh", array::cosh, f64::cosh),
        ("tanh", array::tanh, f64::tanh),
        ("exp", array::exp, f64::exp),
        ("exp2", array::exp2, f64::exp2),
        ("expm1", array::expm1, f64::exp_m1),
        ("log", array::log, f64::ln),
        ("log2", array::log2, f64::log2),
        ("log10", array::log10, f64::log10),
        ("log1p", array::log1p, f64::ln_1p),
        ("sqrt", array::sqrt, f64::sqrt),
        ("cbrt", array::cbrt, f64::cbrt),
        ("floor", array::floor, f64::floor),
        ("ceil", array::ceil, f64::ceil),
        ("round", array::round, f64::round_ties_even),
        ("abs", |a| a.abs(), f64::abs),
        (
            "sign",
            |a| a.sign(),
            |x| {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    x
                }
            },
        ),
        ("neg", |a| -a, |x| -x),
    ]
}

/// A shape that broadcasts against `shape`: some axes set to 1, maybe
/// fewer leading axes.
fn broadcast_partner(shape: &[usize], mask: &[bool], drop: usize) -> Vec<usize> {
    let kept = &shape[drop.min(shape.len())..];
    kept.iter().zip(&mask[drop.min(shape.len())..]).map(|(&n, &one)| if one { 1 } else { n }).collect()
}

/// Two operands that broadcast together, each chunked: `x` of a random
/// shape, `y` with some of its axes 1 and maybe fewer leading axes.
fn broadcast_pair() -> impl Strategy<Value = (ArrayD<f64>, Vec<usize>, ArrayD<f64>, usize)> {
    (
        data(),
        proptest::collection::vec(any::<bool>(), 3),
        0usize..2,
        1usize..4,
        proptest::collection::vec(-3.0f64..3.0, 216),
    )
        .prop_map(|((x, blocks), mask, drop, other_blocks, values)| {
            let yshape = broadcast_partner(x.shape(), &mask, drop);
            let n: usize = yshape.iter().product();
            let y = ArrayD::from_shape_vec(IxDyn(&yshape), values[..n].to_vec()).expect("sizes agree");
            (x, blocks, y, other_blocks)
        })
}

fn reference_reduce(x: &ArrayD<f64>, axes: &[usize], f: impl Fn(&ArrayD<f64>, Axis) -> ArrayD<f64>) -> ArrayD<f64> {
    let mut sorted = axes.to_vec();
    sorted.sort_unstable();
    let mut out = x.clone();
    for &a in sorted.iter().rev() {
        out = f(&out, Axis(a));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn unary_functions_match_the_standard_library((x, blocks) in data()) {
        let a = array::from_ndarray(&x, blocks);
        for (name, op, f) in unary_ops() {
            let got = compute(&op(&a));
            // Vectorised approximations (within 2 ulp); the rest call std.
            let vectorised = ["arcsin", "arccos", "exp", "log", "sin", "cos"].contains(&name);
            let tol = if vectorised { 1e-15 } else { 0.0 };
            assert_close(&got, &x.mapv(f), tol).map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
        }
        prop_assert_eq!(compute(&a.isnan()), x.mapv(f64::is_nan));
        prop_assert_eq!(compute(&array::sqrt(&a).isfinite()), x.mapv(|v| v.sqrt().is_finite()));
    }

    #[test]
    fn binary_operations_broadcast_as_numpy((x, blocks, y, other_blocks) in broadcast_pair()) {
        let a = array::from_ndarray(&x, blocks);
        let b = array::from_ndarray(&y, other_blocks);
        let cases: Vec<(&str, Array<f64>, ArrayD<f64>)> = vec![
            ("add", &a + &b, &x + &y),
            ("sub", &a - &b, &x - &y),
            ("mul", &a * &b, &x * &y),
            ("div", &a / &b, &x / &y),
            ("pow", a.pow(&b), ndarray::Zip::from(&x).and_broadcast(&y).map_collect(|p, q| p.powf(*q))),
            ("arctan2", a.arctan2(&b), ndarray::Zip::from(&x).and_broadcast(&y).map_collect(|p, q| p.atan2(*q))),
            ("hypot", a.hypot(&b), ndarray::Zip::from(&x).and_broadcast(&y).map_collect(|p, q| p.hypot(*q))),
            ("minimum", a.minimum(&b), ndarray::Zip::from(&x).and_broadcast(&y).map_collect(|p, q| p.min(*q))),
            ("maximum", a.maximum(&b), ndarray::Zip::from(&x).and_broadcast(&y).map_collect(|p, q| p.max(*q))),
            ("rem", &a % &b, ndarray::Zip::from(&x).and_broadcast(&y).map_collect(|p, q| {
                let r = p % q;
                if r != 0.0 && (r < 0.0) != (*q < 0.0) { r + q } else { r }
            })),
            ("scalar", 2.0 * &a + 1.0, x.mapv(|v| 2.0 * v + 1.0)),
            ("clip", a.clip(-0.5, 0.5), x.mapv(|v| v.clamp(-0.5, 0.5))),
        ];
        for (name, got, want) in cases {
            assert_close(&compute(&got), &want, 0.0).map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
        }
        let less = ndarray::Zip::from(&x).and_broadcast(&y).map_collect(|p, q| p < q);
        prop_assert_eq!(compute(&a.less(&b)), less.clone());
        prop_assert_eq!(compute(&a.greater_equal(&b)), less.mapv(|v| !v));
        let picked = ndarray::Zip::from(&x).and_broadcast(&y).map_collect(|p, q| if p < q { *p } else { *q });
        prop_assert_eq!(compute(&array::where_(&a.less(&b), &a, &b)), picked);
        let both = compute(&a.greater(0.0).logical_and(b.greater(0.0)));
        let want = ndarray::Zip::from(&x).and_broadcast(&y).map_collect(|p, q| *p > 0.0 && *q > 0.0);
        prop_assert_eq!(both, want);
    }

    #[test]
    fn integer_arithmetic_is_exact(
        (x, blocks) in data(),
        divisor in -4i64..5,
    ) {
        let xi = x.mapv(|v| (v * 1000.0) as i64);
        let a = array::from_ndarray(&xi, blocks);
        let floor_div = |p: i64, q: i64| if q == 0 { 0 } else { p.div_euclid(q) - i64::from(q < 0 && p.rem_euclid(q) != 0) };
        prop_assert_eq!(compute(&(&a * 3 - 7)), xi.mapv(|v| v * 3 - 7));
        prop_assert_eq!(compute(&(&a / divisor)), xi.mapv(|v| floor_div(v, divisor)));
        let rem = |p: i64, q: i64| if q == 0 { 0 } else { p - floor_div(p, q) * q };
        prop_assert_eq!(compute(&(&a % divisor)), xi.mapv(|v| rem(v, divisor)));
        prop_assert_eq!(compute(&(&a & 0xff)), xi.mapv(|v| v & 0xff));
        prop_assert_eq!(compute(&a.sum(..)).sum(), xi.sum());
        prop_assert_eq!(compute(&a.astype::<u8>()), xi.mapv(|v| v as u8));
        prop_assert_eq!(compute(&a.astype::<i32>().astype::<f32>()), xi.mapv(|v| v as i32 as f32));
    }

    #[test]
    fn reductions_match_over_any_axes(
        (x, blocks) in data(),
        pick in proptest::collection::vec(any::<bool>(), 3),
        keepdims in any::<bool>(),
        split in 2usize..5,
    ) {
        let a = array::from_ndarray(&x, blocks);
        let axes: Vec<usize> = (0..x.ndim()).filter(|&d| pick[d]).collect();
        let opts = Reduction::new().keepdims(keepdims).split_every(split);
        let shape_of = |r: &ArrayD<f64>| -> ArrayD<f64> {
            if keepdims {
                let shape: Vec<usize> = (0..x.ndim()).map(|d| if axes.contains(&d) { 1 } else { x.shape()[d] }).collect();
                r.clone().into_shape_with_order(IxDyn(&shape)).expect("same size")
            } else {
                r.clone()
            }
        };
        let count = axes.iter().map(|&d| x.shape()[d]).product::<usize>() as f64;
        let sum = reference_reduce(&x, &axes, |a, ax| a.sum_axis(ax));
        let prod = reference_reduce(&x, &axes, |a, ax| a.map_axis(ax, |v| v.iter().product()));
        let min = reference_reduce(&x, &axes, |a, ax| a.map_axis(ax, |v| v.iter().copied().fold(f64::INFINITY, f64::min)));
        let max = reference_reduce(&x, &axes, |a, ax| a.map_axis(ax, |v| v.iter().copied().fold(f64::NEG_INFINITY, f64::max)));
        let mean = sum.mapv(|v| v / count);
        let sq = reference_reduce(&x.mapv(|v| v * v), &axes, |a, ax| a.sum_axis(ax));
        let var = ndarray::Zip::from(&sq).and(&mean).map_collect(|q, m| q / count - m * m);
        assert_close(&compute(&a.sum_with(axes.clone(), opts)), &shape_of(&sum), 1e-12)?;
        assert_close(&compute(&a.prod_with(axes.clone(), opts)), &shape_of(&prod), 1e-12)?;
        assert_close(&compute(&a.min_with(axes.clone(), opts)), &shape_of(&min), 0.0)?;
        assert_close(&compute(&a.max_with(axes.clone(), opts)), &shape_of(&max), 0.0)?;
        assert_close(&compute(&a.mean_with(axes.clone(), opts)), &shape_of(&mean), 1e-12)?;
        let var_got = compute(&a.var(axes.clone(), 0));
        assert_close(&var_got, &var, 1e-9)?;
        assert_close(&compute(&a.std(axes.clone(), 0)), &var.mapv(f64::sqrt), 1e-7)?;
        let positive = reference_reduce(&x.mapv(|v| f64::from(u8::from(v > 0.0))), &axes, |a, ax| a.sum_axis(ax));
        prop_assert_eq!(compute(&a.greater(0.0).any(axes.clone())), positive.mapv(|v| v > 0.0));
        prop_assert_eq!(compute(&a.greater(0.0).all(axes.clone())), positive.mapv(|v| v == count));
        prop_assert_eq!(compute(&a.greater(0.0).sum(axes.clone())), positive.mapv(|v| v as i64));
    }

    #[test]
    fn arg_reductions_find_the_first_extreme((x, blocks) in data(), axis in 0usize..3) {
        let axis = axis % x.ndim();
        // Ties on purpose: coarse values.
        let x = x.mapv(|v| (v * 2.0).round());
        let a = array::from_ndarray(&x, blocks);
        let first = |better: fn(f64, f64) -> bool| {
            x.map_axis(Axis(axis), |lane| {
                let mut best = 0;
                for (i, &v) in lane.iter().enumerate() {
                    if better(v, lane[best]) {
                        best = i;
                    }
                }
                best as i64
            })
        };
        prop_assert_eq!(compute(&a.argmin(axis)), first(|v, b| v < b));
        prop_assert_eq!(compute(&a.argmax(axis)), first(|v, b| v > b));
        let flat: Vec<f64> = x.iter().copied().collect();
        let want = flat.iter().enumerate().fold(0, |b, (i, &v)| if v < flat[b] { i } else { b }) as i64;
        prop_assert_eq!(compute(&a.argmin(..)).sum(), want);
    }

    #[test]
    fn slicing_matches_ndarray(
        (x, blocks) in data(),
        starts in proptest::collection::vec(-6isize..6, 3),
        lens in proptest::collection::vec(0isize..7, 3),
        steps in proptest::collection::vec(prop_oneof![1isize..3, -3isize..-1], 3),
        index_axis in 0usize..4,
    ) {
        let a = array::from_ndarray(&x, blocks);
        let mut info: Vec<SliceInfoElem> = Vec::new();
        for d in 0..x.ndim() {
            let n = x.shape()[d] as isize;
            if d == index_axis {
                info.push(SliceInfoElem::Index(starts[d].rem_euclid(n)));
            } else {
                let start = starts[d].clamp(-n, n);
                let end = (start.rem_euclid(n.max(1)) + lens[d]).min(n);
                info.push(SliceInfoElem::Slice { start, end: Some(end), step: steps[d] });
            }
        }
        let info = ndarray::SliceInfo::<Vec<SliceInfoElem>, IxDyn, IxDyn>::try_from(info).expect("valid slice");
        let want = x.slice(info.as_ref()).to_owned();
        let got = compute(&a.slice(info.as_ref()));
        prop_assert_eq!(got, want);
    }

    #[test]
    fn layout_changes_keep_the_values((x, blocks) in data(), new_blocks in 1usize..5) {
        let a = array::from_ndarray(&x, blocks);
        prop_assert_eq!(compute(&a.rechunk(new_blocks)), x.clone());
        prop_assert_eq!(compute(&a.transpose()), x.t().to_owned());
        let flat = x.len();
        let want = x.clone().into_shape_with_order(IxDyn(&[flat])).expect("same size");
        prop_assert_eq!(compute(&a.reshape(&[flat])), want.clone());
        if flat % 2 == 0 {
            let two = want.clone().into_shape_with_order(IxDyn(&[2, flat / 2])).expect("same size");
            prop_assert_eq!(compute(&a.reshape(&[2, flat / 2])), two);
        }
        let both = array::concatenate(&[&a, &a.rechunk(new_blocks)], 0);
        prop_assert_eq!(compute(&both), ndarray::concatenate(Axis(0), &[x.view(), x.view()]).expect("same shapes"));
        let stacked = array::stack(&[&a, &(&a * 2.0)], x.ndim());
        let doubled = x.mapv(|v| v * 2.0);
        prop_assert_eq!(compute(&stacked), ndarray::stack(Axis(x.ndim()), &[x.view(), doubled.view()]).expect("same shapes"));
    }

    #[test]
    fn matmul_matches_dot(
        (m, k, n) in (1usize..7, 1usize..7, 1usize..7),
        (bm, bk, bn) in (1usize..4, 1usize..4, 1usize..4),
        seed in any::<u64>(),
    ) {
        let rng = RandomState::new(seed);
        let a = rng.integers(-5, 5, &[m, k], [bm, bk]);
        let b = rng.integers(-5, 5, &[k, n], [bk.max(2), bn]);
        let (x, y) = (compute(&a), compute(&b));
        let want = x.clone().into_dimensionality::<ndarray::Ix2>().expect("2-d")
            .dot(&y.clone().into_dimensionality::<ndarray::Ix2>().expect("2-d"));
        prop_assert_eq!(compute(&a.matmul(&b)), want.clone().into_dyn());
        prop_assert_eq!(compute(&a.dot(&b)), want.into_dyn());
    }

    #[test]
    fn random_numbers_do_not_depend_on_chunks(
        (shape, blocks) in shape_and_blocks(),
        other in 1usize..5,
        seed in any::<u64>(),
    ) {
        let uniform = |chunks: Chunks| compute(&RandomState::new(seed).random(&shape, chunks));
        let a = uniform(blocks.clone().into());
        prop_assert_eq!(&a, &uniform(other.into()));
        prop_assert!(a.iter().all(|v| (0.0..1.0).contains(v)));
        let normal = |chunks: Chunks| compute(&RandomState::new(seed).normal(1.0, 2.0, &shape, chunks));
        prop_assert_eq!(normal(blocks.clone().into()), normal(other.into()));
        let ints = |chunks: Chunks| compute(&RandomState::new(seed).integers(-3, 9, &shape, chunks));
        let i = ints(blocks.into());
        prop_assert_eq!(&i, &ints(other.into()));
        prop_assert!(i.iter().all(|v| (-3..9).contains(v)));
    }
}

/// Data of a shape in irregular chunks: each axis cut at random places.
fn irregular_data() -> impl Strategy<Value = (ArrayD<f64>, Chunks)> {
    proptest::collection::vec(1usize..7, 1..4)
        .prop_flat_map(|shape| {
            let cuts: Vec<_> = shape.iter().map(|&n| proptest::collection::vec(any::<bool>(), n - 1)).collect();
            let n: usize = shape.iter().product();
            (Just(shape), cuts, proptest::collection::vec(-1.5f64..1.5, n))
        })
        .prop_map(|(shape, cuts, values)| {
            let sizes = cuts
                .iter()
                .map(|cut| {
                    let mut sizes = vec![1usize];
                    for &new_chunk in cut {
                        match sizes.last_mut() {
                            Some(last) if !new_chunk => *last += 1,
                            _ => sizes.push(1),
                        }
                    }
                    sizes
                })
                .collect();
            (ArrayD::from_shape_vec(IxDyn(&shape), values).expect("sizes agree"), Chunks::Explicit(sizes))
        })
}

/// Each element's global index, written in base 100.
fn global_code(offset: Vec<usize>, shape: Vec<usize>) -> ArrayD<i64> {
    ArrayD::from_shape_fn(IxDyn(&shape), |i| {
        (0..shape.len()).map(|d| (offset[d] + i[d]) as i64 * 100i64.pow(d as u32)).sum()
    })
}

fn affine(block: ArrayD<f64>) -> ArrayD<f64> {
    block.mapv(|v| 2.0 * v + 1.0)
}

/// The axes in the order of their keys.
fn permutation(keys: &[u32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by_key(|&d| (keys[d], d));
    order
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn creation_matches_ndarray(
        (shape, blocks) in shape_and_blocks(),
        value in -5i64..5,
        n in 2usize..20,
        chunk in 1usize..6,
    ) {
        let dims = IxDyn(&shape);
        prop_assert_eq!(compute(&array::zeros::<f64>(&shape, blocks.clone())), ArrayD::<f64>::zeros(dims.clone()));
        prop_assert_eq!(compute(&array::ones::<i32>(&shape, blocks.clone())), ArrayD::from_elem(dims.clone(), 1i32));
        prop_assert_eq!(compute(&array::full(&shape, value, blocks.clone())), ArrayD::from_elem(dims.clone(), value));
        prop_assert_eq!(compute(&array::full(&shape, value > 0, blocks.clone())), ArrayD::from_elem(dims.clone(), value > 0));
        let want = ArrayD::from_shape_fn(dims, |i| (0..shape.len()).map(|d| i[d] as i64 * 100i64.pow(d as u32)).sum::<i64>());
        prop_assert_eq!(compute(&array::from_fn(&shape, blocks, global_code)), want);
        let stop = n as f64 * 0.5;
        let range = ndarray::Array1::range(0.0, stop, 0.5).into_dyn();
        assert_close(&compute(&array::arange(0.0, stop, 0.5, chunk)), &range, 1e-12)?;
        let ints: Vec<i64> = (-3..n as i64).step_by(2).collect();
        prop_assert_eq!(compute(&array::arange(-3i64, n as i64, 2, chunk)).into_raw_vec_and_offset().0, ints);
        let line = ndarray::Array1::linspace(-1.0, 2.0, n).into_dyn();
        assert_close(&compute(&array::linspace(-1.0, 2.0, n, chunk)), &line, 1e-12)?;
        prop_assert_eq!(compute(&array::linspace(-1.0, 2.0, 1, chunk)).into_raw_vec_and_offset().0, vec![-1.0]);
    }

    #[test]
    fn comparisons_and_logic_broadcast((x, blocks, y, other_blocks) in broadcast_pair()) {
        // Coarse values, so that equal pairs occur.
        let x = x.mapv(|v| (v * 2.0).round());
        let y = y.mapv(f64::round);
        let (a, b) = (array::from_ndarray(&x, blocks), array::from_ndarray(&y, other_blocks));
        let zip = |f: fn(f64, f64) -> bool| ndarray::Zip::from(&x).and_broadcast(&y).map_collect(|p, q| f(*p, *q));
        prop_assert_eq!(compute(&a.equal(&b)), zip(|p, q| p == q));
        prop_assert_eq!(compute(&a.not_equal(&b)), zip(|p, q| p != q));
        prop_assert_eq!(compute(&a.less_equal(&b)), zip(|p, q| p <= q));
        prop_assert_eq!(compute(&a.greater(&b)), zip(|p, q| p > q));
        prop_assert_eq!(compute(&a.equal(0.0)), x.mapv(|p| p == 0.0));
        let (pa, pb) = (a.greater(0.0), b.greater(0.0));
        prop_assert_eq!(compute(&pa.logical_or(&pb)), zip(|p, q| p > 0.0 || q > 0.0));
        prop_assert_eq!(compute(&pa.logical_xor(&pb)), zip(|p, q| (p > 0.0) != (q > 0.0)));
        prop_assert_eq!(compute(&pa.logical_not()), x.mapv(|p| p <= 0.0));
        prop_assert_eq!(compute(&(&pa | &pb)), zip(|p, q| p > 0.0 || q > 0.0));
        prop_assert_eq!(compute(&(&pa ^ &pb)), zip(|p, q| (p > 0.0) != (q > 0.0)));
        prop_assert_eq!(compute(&!&pa), x.mapv(|p| p <= 0.0));
        let picked = ndarray::Zip::from(&x).and_broadcast(&y).map_collect(|p, q| if *p > 0.0 { 1.0 } else { *q });
        prop_assert_eq!(compute(&array::where_(&pa, 1.0, &b)), picked);
    }

    #[test]
    fn irregular_chunks_compute_like_regular_ones(
        (x, chunks) in irregular_data(),
        pick in proptest::collection::vec(any::<bool>(), 3),
        new_cut in 1usize..4,
    ) {
        let a = array::from_ndarray(&x, chunks.clone());
        if let Chunks::Explicit(sizes) = &chunks {
            prop_assert_eq!(a.chunks(), &sizes[..]);
        }
        prop_assert_eq!(compute(&a), x.clone());
        assert_close(&compute(&array::arcsin(&a.clip(-1.0, 1.0))), &x.mapv(|v| v.clamp(-1.0, 1.0).asin()), 1e-15)?;
        let axes: Vec<usize> = (0..x.ndim()).filter(|&d| pick[d]).collect();
        let sum = reference_reduce(&x, &axes, |a, ax| a.sum_axis(ax));
        assert_close(&compute(&a.sum(axes.clone())), &sum, 1e-12)?;
        let max = reference_reduce(&x, &axes, |a, ax| a.map_axis(ax, |v| v.iter().copied().fold(f64::NEG_INFINITY, f64::max)));
        assert_close(&compute(&a.max(axes)), &max, 0.0)?;
        let regular = a.rechunk(new_cut);
        prop_assert_eq!(compute(&(&regular + &a)), x.mapv(|v| v + v));
    }

    #[test]
    fn automatic_chunks_hold_the_values((x, _) in data(), target in 8usize..64) {
        let a = array::from_ndarray(&x, Chunks::Auto(target));
        let largest: usize = a.chunks().iter().map(|sizes| sizes.iter().copied().max().unwrap_or(0)).product();
        prop_assert!(largest * 8 <= target.max(8), "chunks {:?} for a target of {target} bytes", a.chunks());
        prop_assert_eq!(compute(&a), x.clone());
        prop_assert_eq!(compute(&array::from_ndarray(&x, "auto")), x);
    }

    #[test]
    fn reduction_options_apply_to_every_reduction(
        (x, blocks) in data(),
        pick in proptest::collection::vec(any::<bool>(), 3),
        keepdims in any::<bool>(),
        split in 2usize..5,
        ddof in 0u32..3,
        axis in 0usize..3,
    ) {
        let a = array::from_ndarray(&x, blocks);
        let axes: Vec<usize> = (0..x.ndim()).filter(|&d| pick[d]).collect();
        let opts = Reduction::new().keepdims(keepdims).split_every(split);
        let kept = |r: ArrayD<f64>, axes: &[usize]| -> ArrayD<f64> {
            if !keepdims {
                return r;
            }
            let shape: Vec<usize> = (0..x.ndim()).map(|d| if axes.contains(&d) { 1 } else { x.shape()[d] }).collect();
            r.into_shape_with_order(IxDyn(&shape)).expect("same size")
        };
        let count = axes.iter().map(|&d| x.shape()[d]).product::<usize>() as f64;
        if count > f64::from(ddof) {
            let mean = reference_reduce(&x, &axes, |a, ax| a.sum_axis(ax)).mapv(|s| s / count);
            let mut deviations = x.clone();
            for (i, v) in deviations.indexed_iter_mut() {
                let at: Vec<usize> = (0..x.ndim()).filter(|d| !axes.contains(d)).map(|d| i[d]).collect();
                *v = (*v - mean[IxDyn(&at)]).powi(2);
            }
            let var = reference_reduce(&deviations, &axes, |a, ax| a.sum_axis(ax)).mapv(|s| s / (count - f64::from(ddof)));
            assert_close(&compute(&a.var_with(axes.clone(), ddof, opts)), &kept(var.clone(), &axes), 1e-9)?;
            assert_close(&compute(&a.std_with(axes.clone(), ddof, opts)), &kept(var.mapv(f64::sqrt), &axes), 1e-7)?;
        }
        let positive = reference_reduce(&x.mapv(|v| f64::from(u8::from(v > 0.0))), &axes, |a, ax| a.sum_axis(ax));
        let any = compute(&a.greater(0.0).any_with(axes.clone(), opts)).mapv(|b| f64::from(u8::from(b)));
        prop_assert_eq!(any, kept(positive.mapv(|v| f64::from(u8::from(v > 0.0))), &axes));
        let all = compute(&a.greater(0.0).all_with(axes.clone(), opts)).mapv(|b| f64::from(u8::from(b)));
        prop_assert_eq!(all, kept(positive.mapv(|v| f64::from(u8::from(v == count))), &axes));
        // Arg reductions: one axis, with the same options.
        let axis = axis % x.ndim();
        let x = x.mapv(|v| (v * 2.0).round());
        let a = array::from_ndarray(&x, 2);
        let first = |better: fn(f64, f64) -> bool| {
            x.map_axis(Axis(axis), |lane| {
                (0..lane.len()).fold(0, |best, i| if better(lane[i], lane[best]) { i } else { best }) as f64
            })
        };
        let got = compute(&a.argmax_with(axis, opts)).mapv(|i| i as f64);
        prop_assert_eq!(got, kept(first(|v, b| v > b), &[axis]));
        let got = compute(&a.argmin_with(axis, opts)).mapv(|i| i as f64);
        prop_assert_eq!(got, kept(first(|v, b| v < b), &[axis]));
        let flat: Vec<f64> = x.iter().copied().collect();
        let want = flat.iter().enumerate().fold(0, |b, (i, &v)| if v > flat[b] { i } else { b }) as i64;
        prop_assert_eq!(compute(&a.argmax(..)).sum(), want);
    }

    #[test]
    fn narrow_types_compute_in_their_own_type((x, blocks) in data()) {
        let xf = x.mapv(|v| v as f32);
        let a = array::from_ndarray(&xf, blocks.clone());
        prop_assert_eq!(compute(&(&a * 2.0f32 + 1.0f32)), xf.mapv(|v| v * 2.0 + 1.0));
        let sines = compute(&array::sin(&a));
        for (g, w) in sines.iter().zip(xf.iter()) {
            prop_assert!((g - w.sin()).abs() <= 1e-6, "sin({w}) = {g}");
        }
        let total = compute(&a.sum(..)).sum();
        prop_assert!((f64::from(total) - xf.iter().map(|&v| f64::from(v)).sum::<f64>()).abs() <= 1e-4);
        prop_assert_eq!(compute(&a.max(..)).sum(), xf.iter().copied().fold(f32::NEG_INFINITY, f32::max));
        let xi = x.mapv(|v| (v * 1000.0) as i32);
        let i = array::from_ndarray(&xi, blocks.clone());
        prop_assert_eq!(compute(&(&i * 3 - 7)), xi.mapv(|v| v * 3 - 7));
        prop_assert_eq!(compute(&i.min(..)).sum(), xi.iter().copied().min().unwrap_or(i32::MAX));
        prop_assert_eq!(compute(&i.sum(..)).sum(), xi.iter().map(|&v| i64::from(v)).sum::<i64>());
        let xu = x.mapv(|v| ((v + 1.5) * 80.0) as u8);
        let u = array::from_ndarray(&xu, blocks);
        // u8 wraps, as in NumPy.
        prop_assert_eq!(compute(&(&u + &u)), xu.mapv(|v| v.wrapping_add(v)));
        prop_assert_eq!(compute(&u.max(..)).sum(), xu.iter().copied().max().unwrap_or(0));
        prop_assert_eq!(compute(&u.sum(..)).sum(), xu.iter().map(|&v| i64::from(v)).sum::<i64>());
    }

    #[test]
    fn nan_is_found_and_spreads((x, blocks) in data()) {
        let x = x.mapv(|v| if v > 1.0 { f64::NAN } else { v });
        let a = array::from_ndarray(&x, blocks);
        prop_assert_eq!(compute(&a.isnan()), x.mapv(f64::is_nan));
        prop_assert_eq!(compute(&a.isfinite()), x.mapv(f64::is_finite));
        let any_nan = x.iter().any(|v| v.is_nan());
        prop_assert_eq!(compute(&a.sum(..)).sum().is_nan(), any_nan);
        prop_assert_eq!(compute(&a.min(..)).sum().is_nan(), any_nan);
    }

    #[test]
    fn user_blocks_persisted_results_and_axis_orders_match(
        (x, blocks) in data(),
        keys in proptest::collection::vec(any::<u32>(), 3),
    ) {
        let a = array::from_ndarray(&x, blocks);
        prop_assert_eq!(compute(&a.map_blocks(affine)), x.mapv(|v| 2.0 * v + 1.0));
        let kept = (&a * 3.0).persist(client()).expect("persists");
        prop_assert_eq!(compute(&kept), x.mapv(|v| v * 3.0));
        prop_assert_eq!(compute(&(&kept - &a)), x.mapv(|v| v * 3.0 - v));
        let order = permutation(&keys[..x.ndim()]);
        prop_assert_eq!(compute(&a.permute_axes(&order)), x.clone().permuted_axes(IxDyn(&order)));
    }

    #[test]
    fn fused_and_unfused_graphs_give_the_same_values(
        (x, blocks) in data(),
        pick in proptest::collection::vec(any::<bool>(), 3),
    ) {
        let a = array::from_ndarray(&x, blocks);
        let axes: Vec<usize> = (0..x.ndim()).filter(|&d| pick[d]).collect();
        let z = (array::arcsin(&a.clip(-1.0, 1.0)) + 2.0 * &array::exp(&a)).sum(axes);
        let fused = compute(&z);
        let unfused = z.compute_unoptimized_with(client()).unwrap_or_else(|e| panic!("compute failed: {e}"));
        assert_close(&fused, &unfused, 1e-12)?;
    }

    #[test]
    fn bounded_uniforms_do_not_depend_on_chunks(
        (shape, blocks) in shape_and_blocks(),
        other in 1usize..5,
        seed in any::<u64>(),
        low in -5.0f64..5.0,
        width in 0.5f64..3.0,
    ) {
        let draw = |chunks: Chunks| compute(&RandomState::new(seed).uniform(low, low + width, &shape, chunks));
        let u = draw(blocks.into());
        prop_assert_eq!(&u, &draw(other.into()));
        prop_assert!(u.iter().all(|v| (low..low + width).contains(v)), "{u:?}");
    }
}

#[test]
fn creation_functions_make_what_numpy_makes() {
    assert_eq!(compute(&array::linspace(0.0, 1.0, 5, 2)).into_raw_vec_and_offset().0, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
    assert_eq!(compute(&array::arange(1.0, 2.0, 0.25, 3)).into_raw_vec_and_offset().0, vec![1.0, 1.25, 1.5, 1.75]);
    assert_eq!(compute(&array::zeros::<i32>(&[2, 2], 1)).sum(), 0);
    assert_eq!(compute(&array::ones::<u8>(&[3, 5], 2)).len(), 15);
    assert_eq!(compute(&array::full(&[2], true, 1)).into_raw_vec_and_offset().0, vec![true, true]);
    let r = RandomState::new(3).random(&[100_000], 10_000);
    let values = compute(&r);
    assert!((values.mean().unwrap_or(0.0) - 0.5).abs() < 0.01);
    let n = compute(&RandomState::new(3).normal(0.0, 1.0, &[100_000], 30_000));
    assert!(n.mean().unwrap_or(1.0).abs() < 0.02);
    assert!((n.std(0.0) - 1.0).abs() < 0.02);
}

#[test]
fn a_slice_computes_only_the_chunks_it_needs() {
    let x = RandomState::new(0).random(&[1_000_000], 1_000);
    let y = (array::arcsin(&x) + 1.0).slice(s![..10]);
    let dot = y.to_dot(true).expect("valid");
    // One fused chunk of 1000 and the slice out of it.
    assert_eq!(dot.matches("shape=circle").count(), 2, "{dot}");
    assert_eq!(compute(&y).len(), 10);
}

#[test]
fn elementwise_chains_fuse_into_one_task_per_chunk() {
    let rng = RandomState::new(0);
    let x = rng.random(&[4, 4, 2], [2, 2, 1]);
    let y = rng.random(&[4, 4, 2], [2, 2, 1]);
    let z = (array::arcsin(&x) + array::arccos(&y)).sum([1, 2]);
    let count = |optimize: bool| {
        let dot = z.to_dot(optimize).expect("valid");
        dot.matches("shape=circle").count()
    };
    // 8 chunks: one fused partial each, and one aggregate per output block.
    assert_eq!(count(true), 8 + 2);
    // Before: random x, random y, arcsin, arccos, add, partial, aggregate.
    assert_eq!(count(false), 5 * 8 + 8 + 2);
    assert_eq!(z.task_count(), count(false));
    let picture = std::env::temp_dir().join(format!("shoal-array-{}.dot", std::process::id()));
    z.visualize(&picture, true).expect("writes DOT");
    assert!(std::fs::read_to_string(&picture).unwrap_or_default().starts_with("digraph"));
    let _ = std::fs::remove_file(picture);
}

#[test]
fn the_repr_reads_like_dasks() {
    let rng = RandomState::new(0);
    let x = rng.random(&[10_000, 10_000, 10], [1_000, 1_000, 5]);
    let y = rng.random(&[10_000, 10_000, 10], [1_000, 1_000, 5]);
    let z = (array::arcsin(&x) + array::arccos(&y)).sum([1, 2]);
    let text = z.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "shoal::Array<float64> (sum)");
    assert!(lines[2].starts_with("Bytes    78.12 kiB") && lines[2].ends_with("7.81 kiB"), "{text}");
    assert!(lines[3].contains("(10000,)") && lines[3].ends_with("(1000,)"), "{text}");
    assert!(lines[4].ends_with("10 chunks"), "{text}");
    assert!(lines[5].starts_with("Type     float64"), "{text}");
    assert_eq!(
        format!("{:?}", x),
        "shoal.array<random, shape=(10000, 10000, 10), dtype=float64, chunksize=(1000, 1000, 5)>"
    );
}

#[test]
fn bad_input_is_a_clear_error() {
    let a = array::ones::<f64>(&[3, 4], 2);
    let b = array::ones::<f64>(&[5], 2);
    let err = compute_err(&(&a + &b));
    assert!(err.contains("add: shapes [3, 4] and [5] cannot be broadcast together"), "{err}");
    // The error travels through everything built on top.
    assert_eq!(compute_err(&(&a + &b).sum(..)), err);
    let err = compute_err(&a.sum(2));
    assert!(err.contains("sum: axis 2 is out of range for an array of 2 dimensions"), "{err}");
    let err = compute_err(&a.slice(s![3, ..]));
    assert!(err.contains("index 3 is out of bounds for axis 0 of length 3"), "{err}");
    let err = compute_err(&a.reshape(&[5, 2]));
    assert!(err.contains("hold different numbers of elements"), "{err}");
    let err = compute_err(&array::ones::<f64>(&[4], vec![vec![3]]));
    assert!(err.contains("the sizes of axis 0 add up to 3, not 4"), "{err}");
    let err = compute_err(&RandomState::new(0).integers(5, 5, &[3], 1));
    assert!(err.contains("low 5 must be below high 5"), "{err}");
    fn wrong_shape(block: ArrayD<f64>) -> ArrayD<f64> {
        block.slice(s![..1, ..]).to_owned().into_dyn()
    }
    let err = compute_err(&a.map_blocks(wrong_shape));
    assert!(err.contains("a block of shape [1, 2] where [2, 2] was expected"), "{err}");
}

fn compute_err<T: array::Element>(a: &Array<T>) -> String {
    match a.compute_with(client()) {
        Ok(_) => panic!("expected an error"),
        Err(e @ ArrayError::Compute(_)) => e.to_string(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn persisted_arrays_start_from_held_results() {
    let x = RandomState::new(9).random(&[1_000], 100);
    let kept = x.persist(client()).expect("persists");
    let a = compute(&(&kept * 2.0).sum(..));
    let b = compute(&(&x * 2.0).sum(..));
    assert_eq!(a, b);
    assert_eq!(compute(&kept), compute(&x));
}

#[test]
fn the_seed_example_at_small_size_averages_pi_over_two() {
    let rng = RandomState::new(5);
    let x = rng.random(&[100, 1_000, 10], [50, 250, 5]);
    let y = rng.random(&[100, 1_000, 10], [50, 250, 5]);
    let z = compute(&(array::arcsin(&x) + array::arccos(&y)).sum([1, 2]));
    assert_eq!(z.shape(), &[100]);
    let mean = z.mean().unwrap_or(0.0) / 10_000.0;
    assert!((mean - std::f64::consts::FRAC_PI_2).abs() < 5e-3, "{mean}");
}
