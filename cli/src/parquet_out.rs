//! `facesweep export --format parquet`: one row per URL with a nested list of faces, written a
//! record batch at a time (memory bounded whatever the job size). Schema in README.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
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

use crate::client::{self, ExportSummary};

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

/// The file's schema: the JSONL export's fields, with `reason` null when empty.
pub fn schema() -> Arc<Schema> {
    let faces = DataType::List(Arc::new(Field::new("item", DataType::Struct(face_fields()), true)));
    Arc::new(Schema::new(vec![
        Field::new("url_id", DataType::Int64, false),
        Field::new("url", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, true),
        Field::new("http_status", DataType::UInt32, false),
        Field::new("width", DataType::UInt32, false),
        Field::new("height", DataType::UInt32, false),
        Field::new("model_id", DataType::Utf8, true),
        Field::new("faces", faces, false),
    ]))
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
    rows: usize,
}

impl Columns {
    fn new() -> Self {
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
        self.http_status.append_value(res.http_status);
        self.width.append_value(res.width);
        self.height.append_value(res.height);
        self.model_id.append_option((!res.model_id.is_empty()).then_some(res.model_id.as_str()));
        let faces = self.faces.values();
        for f in &res.faces {
            for (i, v) in [f.x1, f.y1, f.x2, f.y2, f.score].into_iter().enumerate() {
                faces.field_builder::<Float32Builder>(i).expect("float field").append_value(v);
            }
            let lm = faces.field_builder::<ListBuilder<Box<dyn arrow_array::builder::ArrayBuilder>>>(5);
            append_landmarks(lm.expect("landmarks is field 5"), &f.landmarks);
            faces.append(true);
        }
        self.faces.append(true);
        self.rows += 1;
    }

    fn finish(&mut self) -> anyhow::Result<RecordBatch> {
        let cols: Vec<ArrayRef> = vec![
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
        self.rows = 0;
        Ok(RecordBatch::try_new(schema(), cols)?)
    }
}

fn append_landmarks(lm: &mut ListBuilder<Box<dyn arrow_array::builder::ArrayBuilder>>, values: &[f32]) {
    let floats = lm.values().as_any_mut().downcast_mut::<Float32Builder>().expect("float landmarks");
    floats.append_slice(values);
    lm.append(true);
}

/// Writes the job's export to `out` as Parquet (Snappy), a record batch at a time.
pub async fn export(
    addr: &str,
    what: impl Into<facesweep_proto::ExportResultsRequest>,
    out: &Path,
) -> anyhow::Result<ExportSummary> {
    let mut stream = client::results(addr)?.export_results(what.into()).await?.into_inner();
    let tmp = out.with_extension("parquet.tmp");
    let file = std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        // Bounded by bytes too: long URLs or many faces make rows large.
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
        .build();
    let mut w = ArrowWriter::try_new(file, schema(), Some(props))?;
    let (mut cols, mut sum) = (Columns::new(), ExportSummary::default());
    while let Some(r) = stream.next().await {
        let r = r?;
        sum.lines += 1;
        sum.faces += r.result.as_ref().map_or(0, |x| x.faces.len()) as u64;
        let status = r.result.as_ref().map_or("pending", |x| x.status().short_name());
        *sum.by_status.entry(status.to_string()).or_default() += 1;
        cols.push(&r);
        if cols.rows == BATCH {
            w.write(&cols.finish()?)?;
        }
    }
    if cols.rows > 0 {
        w.write(&cols.finish()?)?;
    }
    w.close()?;
    // Atomic, as the JSONL export: a killed export leaves no half file under the final name.
    std::fs::rename(&tmp, out)?;
    Ok(sum)
}
