//! `facesweep export --format parquet`: one row per URL with a nested list of faces, written a
//! record batch at a time (memory bounded whatever the job size). Schema in README.
//!
//! Carried input columns are string columns after `faces` (JSON text for non-string values),
//! named as in the JSON Lines export. The file's schema is fixed before its first row, so
//! they are the columns seen in the first record batch; values of columns first seen later
//! are left out (counted, with a warning: the JSON Lines export has them).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{
    Float32Builder, Int64Builder, ListBuilder, StringBuilder, StructBuilder, UInt32Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Fields, Schema};
use facesweep_proto::ExportResultsResponse;
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::connect;
use crate::output::{carried, carried_names, px, ExportSummary, Sink};

/// Rows per record batch.
const BATCH: usize = 8192;
/// A row group is written out at this much buffered column data (encoded size) or this many rows,
/// whichever comes first. The writer's default (1,048,576 rows) held ~500 MB at 300k URLs.
const ROW_GROUP_BYTES: usize = 32 << 20;
const ROW_GROUP_ROWS: usize = 64 << 10;

fn face_fields() -> Fields {
    let f = |n: &str| Field::new(n, DataType::Float32, false);
    let landmarks =
        Field::new("landmarks", DataType::List(Arc::new(Field::new("item", DataType::Float32, true))), false);
    Fields::from(vec![f("x1"), f("y1"), f("x2"), f("y2"), f("score"), landmarks])
}

/// The file's schema: the JSONL export's fields (`reason`, `http_status`, `width`, `height`
/// and `model_id` null when unknown), then the carried columns `extra` (output names).
pub fn schema(extra: &[String]) -> Arc<Schema> {
    let faces = DataType::List(Arc::new(Field::new("item", DataType::Struct(face_fields()), true)));
    let mut fields = vec![
        Field::new("url_id", DataType::Int64, false),
        Field::new("url", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, true),
        Field::new("http_status", DataType::UInt32, true),
        Field::new("width", DataType::UInt32, true),
        Field::new("height", DataType::UInt32, true),
        Field::new("model_id", DataType::Utf8, true),
        Field::new("faces", faces, false),
    ];
    fields.extend(extra.iter().map(|n| Field::new(n, DataType::Utf8, true)));
    Arc::new(Schema::new(fields))
}

/// Column builders for one record batch.
struct Columns {
    url_id: Int64Builder,
    url: StringBuilder,
    status: StringBuilder,
    reason: StringBuilder,
    http_status: UInt32Builder,
    width: UInt32Builder,
    height: UInt32Builder,
    model_id: StringBuilder,
    faces: ListBuilder<StructBuilder>,
    /// Carried columns: input keys, output names, builders.
    keys: Vec<String>,
    names: Vec<String>,
    extra: Vec<StringBuilder>,
    /// Carried values left out (their column was not in the first batch).
    dropped: u64,
    rows: usize,
}

impl Columns {
    fn new(keys: Vec<String>) -> Self {
        let face = StructBuilder::from_fields(face_fields(), 0);
        let item = Field::new("item", DataType::Struct(face_fields()), true);
        Columns {
            url_id: Int64Builder::new(),
            url: StringBuilder::new(),
            status: StringBuilder::new(),
            reason: StringBuilder::new(),
            http_status: UInt32Builder::new(),
            width: UInt32Builder::new(),
            height: UInt32Builder::new(),
            model_id: StringBuilder::new(),
            faces: ListBuilder::new(face).with_field(Arc::new(item)),
            names: carried_names(keys.iter().map(String::as_str)),
            extra: keys.iter().map(|_| StringBuilder::new()).collect(),
            keys,
            dropped: 0,
            rows: 0,
        }
    }

    fn push(&mut self, r: &ExportResultsResponse) {
        let res = r.result.clone().unwrap_or_default();
        let pending = r.result.is_none();
        self.url_id.append_value(if pending { r.pending_url_id } else { res.url_id });
        self.url.append_value(&r.url);
        self.status.append_value(if pending { "pending" } else { res.status().short_name() });
        self.reason.append_option((!res.reason.is_empty()).then_some(res.reason.as_str()));
        let known = |v: u32| (v != 0).then_some(v);
        self.http_status.append_option(known(res.http_status));
        self.width.append_option(known(res.width));
        self.height.append_option(known(res.height));
        self.model_id.append_option((!res.model_id.is_empty()).then_some(res.model_id.as_str()));
        let faces = self.faces.values();
        for f in &res.faces {
            let score = crate::output::score(f.score) as f32;
            let coords = [f.x1, f.y1, f.x2, f.y2].map(|v| px(v) as f32);
            for (i, v) in coords.into_iter().chain([score]).enumerate() {
                faces.field_builder::<Float32Builder>(i).expect("float field").append_value(v);
            }
            let lm = faces.field_builder::<ListBuilder<Box<dyn arrow_array::builder::ArrayBuilder>>>(5);
            let landmarks: Vec<f32> = f.landmarks.iter().map(|v| px(*v) as f32).collect();
            append_landmarks(lm.expect("landmarks is field 5"), &landmarks);
            faces.append(true);
        }
        self.faces.append(true);
        self.push_extra(&r.extra);
        self.rows += 1;
    }

    fn push_extra(&mut self, extra: &str) {
        let mut values = carried(extra).unwrap_or_default();
        for (key, b) in self.keys.iter().zip(&mut self.extra) {
            match values.remove(key) {
                None | Some(serde_json::Value::Null) => b.append_null(),
                Some(serde_json::Value::String(s)) => b.append_value(s),
                Some(v) => b.append_value(v.to_string()),
            }
        }
        self.dropped += values.len() as u64;
    }

    fn finish(&mut self) -> anyhow::Result<RecordBatch> {
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(self.url_id.finish()),
            Arc::new(self.url.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.reason.finish()),
            Arc::new(self.http_status.finish()),
            Arc::new(self.width.finish()),
            Arc::new(self.height.finish()),
            Arc::new(self.model_id.finish()),
            Arc::new(self.faces.finish()),
        ];
        cols.extend(self.extra.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        self.rows = 0;
        Ok(RecordBatch::try_new(schema(&self.names), cols)?)
    }
}

fn append_landmarks(lm: &mut ListBuilder<Box<dyn arrow_array::builder::ArrayBuilder>>, values: &[f32]) {
    let floats = lm.values().as_any_mut().downcast_mut::<Float32Builder>().expect("float landmarks");
    floats.append_slice(values);
    lm.append(true);
}

/// The carried columns of `rows`, in the order first seen.
fn keys_of(rows: &[ExportResultsResponse]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for r in rows {
        for k in carried(&r.extra).into_iter().flat_map(|m| m.into_iter().map(|(k, _)| k)) {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    keys
}

/// Writes the job's export to `out` as Parquet (Snappy), a record batch at a time; `-` is
/// stdout, a device is written in place (`output::Sink`).
pub async fn export(
    addr: &str,
    what: impl Into<facesweep_proto::ExportResultsRequest>,
    out: &Path,
) -> anyhow::Result<ExportSummary> {
    let mut stream = connect::results(addr)?.export_results(what.into()).await?.into_inner();
    let (file, commit) = Sink::open(out, "parquet.tmp")?.take();
    // The first batch decides the carried columns.
    let mut first = Vec::with_capacity(BATCH);
    while first.len() < BATCH {
        let Some(r) = stream.next().await else { break };
        first.push(r?);
    }
    let mut cols = Columns::new(keys_of(&first));
    let mut w = ArrowWriter::try_new(file, schema(&cols.names), Some(props()))?;
    let mut sum = ExportSummary::default();
    for r in &first {
        add(&mut cols, &mut sum, r);
    }
    drop(first);
    while let Some(r) = stream.next().await {
        if cols.rows == BATCH {
            w.write(&cols.finish()?)?;
        }
        add(&mut cols, &mut sum, &r?);
    }
    if cols.rows > 0 {
        w.write(&cols.finish()?)?;
    }
    w.into_inner()?.flush()?;
    if cols.dropped > 0 {
        eprintln!(
            "warning: {} values of input columns first seen after row {BATCH} are not in {} (the JSON Lines export has them)",
            cols.dropped,
            out.display()
        );
    }
    commit.commit()?;
    Ok(sum)
}

fn props() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        // Bounded by bytes too: long URLs or many faces make rows large.
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
        .build()
}

fn add(cols: &mut Columns, sum: &mut ExportSummary, r: &ExportResultsResponse) {
    sum.lines += 1;
    sum.faces += r.result.as_ref().map_or(0, |x| x.faces.len()) as u64;
    let status = r.result.as_ref().map_or("pending", |x| x.status().short_name());
    *sum.by_status.entry(status.to_string()).or_default() += 1;
    cols.push(r);
}
