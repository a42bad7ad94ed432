//! `#[shoal::remote]`: registration by stable name, codecs, clear errors.

use shoal::remote::{RemoteError, lookup, registered_names, require};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Stats {
    count: u64,
    mean: f64,
}

shoal::task_output!(Stats);

#[shoal::remote]
fn summarise(values: Vec<f64>, label: String) -> Stats {
    let count = values.len() as u64;
    let mean = if values.is_empty() { 0.0 } else { values.iter().sum::<f64>() / count as f64 };
    let _ = label;
    Stats { count, mean }
}

#[shoal::remote]
fn checked_sqrt(x: f64) -> Result<f64, String> {
    if x < 0.0 { Err(format!("no real square root of {x}")) } else { Ok(x.sqrt()) }
}

#[shoal::remote]
fn no_arguments() -> u8 {
    7
}

mod nested {
    #[shoal::remote]
    pub(crate) fn triple(x: i64) -> i64 {
        3 * x
    }
}

fn here(name: &str) -> String {
    format!("{}::{name}", module_path!())
}

#[test]
fn registered_functions_are_found_by_their_rust_path() {
    for name in ["summarise", "checked_sqrt", "no_arguments", "nested::triple"] {
        let f = require(&here(name)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.name(), here(name), "the stable name is the function's type name");
    }
    assert!(registered_names().contains(&here("nested::triple").as_str()));
}

#[test]
fn arguments_and_results_round_trip_through_bytes() {
    let f = require(&here("summarise")).expect("registered");
    let args = [
        f.encode_arg(0, &vec![1.0f64, 2.0, 6.0]).expect("encodes"),
        f.encode_arg(1, &"x".to_string()).expect("encodes"),
    ];
    let out = f.call_encoded(&args).expect("runs");
    assert_eq!(f.decode_result::<Stats>(&out).expect("decodes"), Stats { count: 3, mean: 3.0 });
    let none = require(&here("no_arguments")).expect("registered");
    assert_eq!(none.decode_result::<u8>(&none.call_encoded(&[]).expect("runs")).expect("decodes"), 7);
}

#[test]
fn failures_and_misuse_name_the_problem() {
    let sqrt = require(&here("checked_sqrt")).expect("registered");
    let err = sqrt.call_encoded(&[sqrt.encode_arg(0, &-4.0f64).expect("encodes")]).expect_err("negative");
    assert_eq!(err.to_string(), "no real square root of -4");

    let err = sqrt.encode_arg(0, &"four").expect_err("wrong type");
    assert!(matches!(err, RemoteError::WrongType { position: 0, .. }), "{err}");
    assert!(err.to_string().contains("f64"));

    let err = sqrt.call_encoded(&[vec![1, 2]]).expect_err("garbage bytes");
    assert!(matches!(err, RemoteError::Decode { position: 0, .. }), "{err}");

    let err = sqrt.call_encoded(&[]).expect_err("missing argument");
    assert!(matches!(err, RemoteError::Arity { expected: 1, got: 0, .. }), "{err}");

    let err = require("my_program::not_there").err().expect("unregistered");
    assert!(err.to_string().contains("#[shoal::remote]"), "{err}");
    assert!(lookup("my_program::not_there").is_none());
}

#[test]
fn the_function_stays_callable_and_usable_locally() {
    assert_eq!(nested::triple(5), 15);
    let client = shoal::Client::sync();
    assert_eq!(client.submit(nested::triple, (4,)).result(), Ok(12));
}

#[test]
fn a_remote_function_declared_inside_a_function_is_found_by_its_task_name() {
    #[shoal::remote]
    fn local_helper(x: u32) -> u32 {
        x + 100
    }
    let client = shoal::Client::sync();
    let future = client.submit(local_helper, (1u32,));
    let f = require(future.key().prefix()).err();
    assert!(f.is_some(), "prefixes are short names, not registry names");
    let by_type = lookup(std::any::type_name_of_val(&local_helper)).expect("registered under its type name");
    assert_eq!(by_type.arity(), 1);
    assert_eq!(future.result(), Ok(101));
}
