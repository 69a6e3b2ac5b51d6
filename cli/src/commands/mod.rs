pub mod fit;
pub mod hypotest;
pub mod inspect;
pub mod nll;
pub mod ranking;
pub mod scan;
pub mod toys;
pub mod upper_limit;
