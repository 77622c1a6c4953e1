//! tracewire in one screen: spans with profiler labels that cross an `.await` and a
//! `tokio::spawn`, exported as JSON lines to stdout, then printed as a tree.
//!
//! ```text
//! cargo run --release -p examples --bin quickstart
//! ```

use std::time::Duration;

use tracewire::export::{InMemoryExporter, JsonLinesExporter};
use tracewire::labels::{self, LabelSet};
use tracewire::trace::SpanData;
use tracewire::{Context, ContextExt, KeyValue, SpanKind, Status, TracerProvider};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // A binary installs its pipeline; libraries only take a Tracer. The OTEL_*
    // variables configure it (OTEL_SERVICE_NAME, the sampler, OTEL_BSP_*, and
    // OTEL_TRACES_EXPORTER instead of the JSON lines below).
    let memory = InMemoryExporter::new();
    let builder = TracerProvider::builder()
        .with_fallback_service_name("quickstart")
        .from_env()
        .with_batch_exporter(memory.clone());
    let builder = match examples::PipelineFlags::default()
        .add_exporters_or_env(builder, &tracewire::env::system)
    {
        Ok((builder, Some(_))) => builder,
        Ok((builder, None)) => builder.with_batch_exporter(JsonLinesExporter::stdout()),
        Err(e) => {
            eprintln!("quickstart: {e}");
            std::process::exit(2);
        }
    };
    let provider = builder.build();
    let tracer = provider.tracer("quickstart");

    println!("# exported spans (JSON lines):");
    let request = tracer
        .span_builder("GET /user")
        .with_kind(SpanKind::Server)
        .with_attribute(KeyValue::new("http.route", "/user"))
        .start();
    let ctx = Context::new()
        .with_span(request)
        .with_labels(LabelSet::new([("http-path", "/user")]));

    async {
        let lookup = tracer.start("cache.lookup");
        tokio::time::sleep(Duration::from_millis(5)).await; // crosses an .await
        lookup.set_attribute("cache.hit", false);
        lookup.end();

        // The spawned task inherits the context: its span's parent is the request,
        // and its CPU samples would carry http-path=/user.
        let worker = tracewire::spawn({
            let tracer = tracer.clone();
            async move {
                let db = tracer
                    .span_builder("db.query")
                    .with_kind(SpanKind::Client)
                    .start();
                let path = labels::current().get("http-path").map(str::to_owned);
                db.set_attribute("labels.http-path", path.unwrap_or_default());
                tokio::time::sleep(Duration::from_millis(10)).await;
                db.add_event("rows fetched", vec![KeyValue::new("rows", 42)]);
                db.end();
            }
        });
        worker.await.expect("worker task");
        Context::current().span().set_status(Status::Ok);
    }
    .in_context(ctx)
    .await;

    provider
        .shutdown(Duration::from_secs(5))
        .expect("flush at shutdown");

    println!("\n# the same trace as a tree:");
    print_tree(&memory.spans());
    let stats = provider.stats();
    println!(
        "\nspans: started {} ended {} exported {} dropped {} (two exporters)",
        stats.started, stats.ended, stats.exported, stats.dropped
    );
}

fn print_tree(spans: &[SpanData]) {
    fn walk(spans: &[SpanData], parent: &SpanData, depth: usize) {
        for child in spans
            .iter()
            .filter(|s| s.parent_span_id == parent.span_context.span_id())
        {
            line(child, depth);
            walk(spans, child, depth + 1);
        }
    }
    fn line(s: &SpanData, depth: usize) {
        println!(
            "{:indent$}{} [{}] {:.1} ms trace={} span={}",
            "",
            s.name,
            s.kind.as_str(),
            s.duration().as_secs_f64() * 1e3,
            s.span_context.trace_id(),
            s.span_context.span_id(),
            indent = depth * 2
        );
    }
    for root in spans.iter().filter(|s| s.is_root()) {
        line(root, 0);
        walk(spans, root, 1);
    }
}
