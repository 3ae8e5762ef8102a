//! Parquet input: a text column named `url`, the other columns carried as JSON values
//! (numbers and booleans as such, text as strings; other types as their debug text).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

use super::read::{classify, object, unique_names, Raw, RawIter};

/// Rows decoded at a time.
const BATCH: usize = 4096;

pub(super) fn rows(path: &Path, columns: &mut Vec<String>) -> anyhow::Result<RawIter> {
    let name = path.display().to_string();
    let file = std::fs::File::open(path).with_context(|| format!("open {name}"))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{name}: not a readable Parquet file"))?;
    let schema = builder.schema().clone();
    let col =
        schema.fields().iter().position(|f| f.name().eq_ignore_ascii_case("url")).with_context(|| {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            format!("{name}: no `url` column ({}); name the column of URLs `url`", names.join(", "))
        })?;
    let url_type = schema.field(col).data_type();
    anyhow::ensure!(
        matches!(url_type, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View),
        "{name}: column `url` is {url_type}, not text"
    );
    let names = unique_names(
        schema.fields().iter().enumerate().filter(|(i, _)| *i != col).map(|(_, f)| f.name().clone()),
    );
    columns.extend(names.iter().cloned());
    let reader = builder.with_batch_size(BATCH).build().with_context(|| format!("read {name}"))?;
    let mut row = 0u64;
    Ok(Box::new(reader.flat_map(move |batch| {
        let out: Vec<anyhow::Result<Raw>> = match batch {
            Ok(b) => batch_rows(&b, col, &names),
            Err(e) => vec![Err(anyhow::anyhow!("{name}: after row {row}: {e}"))],
        };
        row += out.len() as u64;
        out
    })))
}

fn batch_rows(b: &RecordBatch, col: usize, names: &[String]) -> Vec<anyhow::Result<Raw>> {
    let urls = b.column(col);
    let others: Vec<&ArrayRef> =
        b.columns().iter().enumerate().filter(|(i, _)| *i != col).map(|(_, c)| c).collect();
    (0..b.num_rows())
        .map(|i| {
            let extra = object(names, others.iter().map(|c| json_at(c, i)));
            Ok(match text_at(urls, i) {
                Some(u) => classify(&u, extra),
                None => Raw::Empty,
            })
        })
        .collect()
}

fn text_at(a: &Arc<dyn Array>, i: usize) -> Option<String> {
    if a.is_null(i) {
        return None;
    }
    Some(match a.data_type() {
        DataType::Utf8 => a.as_string::<i32>().value(i).to_string(),
        DataType::LargeUtf8 => a.as_string::<i64>().value(i).to_string(),
        DataType::Utf8View => a.as_string_view().value(i).to_string(),
        _ => return None,
    })
}

/// One cell as a JSON value.
fn json_at(a: &ArrayRef, i: usize) -> Value {
    if a.is_null(i) {
        return Value::Null;
    }
    macro_rules! num {
        ($t:ty) => {
            Value::from(a.as_primitive::<$t>().value(i))
        };
    }
    match a.data_type() {
        DataType::Boolean => Value::from(a.as_boolean().value(i)),
        DataType::Int8 => num!(Int8Type),
        DataType::Int16 => num!(Int16Type),
        DataType::Int32 => num!(Int32Type),
        DataType::Int64 => num!(Int64Type),
        DataType::UInt8 => num!(UInt8Type),
        DataType::UInt16 => num!(UInt16Type),
        DataType::UInt32 => num!(UInt32Type),
        DataType::UInt64 => num!(UInt64Type),
        // Non-finite floats have no JSON form: null.
        DataType::Float32 => num!(Float32Type),
        DataType::Float64 => num!(Float64Type),
        _ => text_at(a, i).map(Value::from).unwrap_or_else(|| Value::from(format!("{:?}", a.slice(i, 1)))),
    }
}
