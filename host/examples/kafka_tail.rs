//! Prints what FluxPay's relay publishes: every record of the topics whose
//! names match a pattern, from the earliest offset, with its key and
//! CloudEvents headers (`kcat -C -f '%k %h %s'` does the same against
//! Apache Kafka; it cannot talk to every Kafka-protocol broker).
//!
//! ```text
//! cargo run -p fluxpay-host --example kafka_tail -- 127.0.0.1:9092 '^fluxpay\..*'
//! ```

use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let brokers = args.next().unwrap_or_else(|| "127.0.0.1:9092".into());
    // A leading `^` makes librdkafka treat it as a regular expression.
    let pattern = args.next().unwrap_or_else(|| r"^fluxpay\..*".into());
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", format!("kafka-tail-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        // New topics matching the pattern are picked up within 5 s.
        .set("topic.metadata.refresh.interval.ms", "5000")
        .create()?;
    consumer.subscribe(&[pattern.as_str()])?;
    eprintln!("reading {pattern} from {brokers} (Ctrl-C to stop)");
    loop {
        let message = consumer.recv().await?;
        let headers: Vec<String> = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|header| {
                        format!(
                            "{}={}",
                            header.key,
                            String::from_utf8_lossy(header.value.unwrap_or_default())
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "{} [{}@{}] key={} {}\n  {}",
            message.topic(),
            message.partition(),
            message.offset(),
            String::from_utf8_lossy(message.key().unwrap_or_default()),
            headers.join(" "),
            String::from_utf8_lossy(message.payload().unwrap_or_default()),
        );
    }
}
