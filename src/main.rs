use clap::Parser;

// glibc's malloc showed as the largest single cost in profiles of the dispatch path.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use jetask::cli::{Cli, Command};
use jetask::core::config::Config;

/// What must be flushed before the process exits.
struct Logging {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Logging {
    fn flush(self) {
        #[cfg(feature = "otel")]
        if let Some(p) = self.provider {
            let _ = p.shutdown();
        }
    }
}

fn init_logging(config: &Config) -> Logging {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if config.log.format == "json" {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    let registry = tracing_subscriber::registry().with(filter).with(fmt);
    #[cfg(feature = "otel")]
    {
        let (layer, provider) = match jetask::core::trace::otel::layer() {
            Ok(Some((l, p))) => (Some(l), Some(p)),
            Ok(None) => (None, None),
            Err(e) => {
                eprintln!("warning: {e}; spans are not exported");
                (None, None)
            }
        };
        registry.with(layer).init();
        Logging { provider }
    }
    #[cfg(not(feature = "otel"))]
    {
        registry.init();
        Logging {}
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let svc = jetask::service::start(config).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    svc.stop().await;
    Ok(())
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let result = match cli.command {
        Command::Serve => {
            let logging = init_logging(&config);
            let r = serve(config).await.map(|_| 0);
            logging.flush();
            r
        }
        Command::Dev(args) => {
            let logging = init_logging(&config);
            let r = jetask::cli::dev::run(config, args).await.map(|_| 0);
            logging.flush();
            r
        }
        _ => jetask::cli::run_client(cli, config).await,
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
