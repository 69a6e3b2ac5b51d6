//! The ranking against fixed-parameter refits done by hand here.

mod common;
use common::*;
use nextstat::infer::mle::prefit_sigma;
use nextstat::infer::{ranking, FitOptions, Fitter};

#[test]
fn ranking_matches_refits_by_hand() {
    let model = load(
        &repo().join("examples/models/counting.json"),
        None,
        Default::default(),
    );
    let (nominal, entries) = ranking(&model, &model.observed).unwrap();
    let poi = model.poi;
    let sigma = nominal.uncertainties.clone().unwrap();
    let mut fitter = Fitter::new(&model);
    let refit = |fitter: &mut Fitter, i: usize, v: f64| {
        let (lo, hi) = model.parameters[i].bounds;
        let f = fitter.fit(
            &model.observed,
            &FitOptions {
                fixed: vec![(i, v.clamp(lo, hi))],
                init: None,
                uncertainties: false,
            },
        );
        assert!(f.converged);
        f.pars[poi] - nominal.pars[poi]
    };
    assert_eq!(
        entries.len(),
        model.n_params() - 1,
        "every free parameter but the POI is ranked"
    );
    for e in &entries {
        let i = e.index;
        let up = refit(&mut fitter, i, nominal.pars[i] + sigma[i]);
        let down = refit(&mut fitter, i, nominal.pars[i] - sigma[i]);
        assert!(
            (e.postfit_up - up).abs() < 1e-5,
            "{}: {} vs {}",
            e.name,
            e.postfit_up,
            up
        );
        assert!(
            (e.postfit_down - down).abs() < 1e-5,
            "{}: {} vs {}",
            e.name,
            e.postfit_down,
            down
        );
        if let Some(s) = prefit_sigma(&model, i) {
            let c = model.parameters[i].init_centre();
            let pu = refit(&mut fitter, i, c + s);
            assert!(
                (e.prefit_up.unwrap() - pu).abs() < 1e-5,
                "{}: prefit {} vs {}",
                e.name,
                e.prefit_up.unwrap(),
                pu
            );
        }
    }
    // sorted by the larger post-fit impact
    for w in entries.windows(2) {
        assert!(w[0].size() >= w[1].size());
    }
}

/// A POI starting on its lower bound 0 with the gradient pointing inward leaves the bound.
#[test]
fn fit_leaves_the_poi_lower_bound() {
    let model = load(
        &repo().join("examples/models/counting.json"),
        None,
        Default::default(),
    );
    let mut init = model.init();
    init[model.poi] = 0.0;
    let f = Fitter::new(&model).fit(
        &model.observed,
        &FitOptions {
            init: Some(init),
            ..Default::default()
        },
    );
    assert!(f.converged);
    assert!(
        f.pars[model.poi] > 0.5,
        "POI stayed at {}",
        f.pars[model.poi]
    );
    let free = Fitter::new(&model).fit_free(&model.observed);
    assert!((f.nll - free.nll).abs() < 1e-9);
}
