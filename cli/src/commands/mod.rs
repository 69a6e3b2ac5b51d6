pub mod inspect;
pub mod nll;
