//! `shoal efficiency`: how well a finished batch job used what it reserved
//! (cores, memory, time), as the seed tutorial's exercises 6 and 7 ask of a
//! `qacct` record. The reading and the report are
//! `shoal_deploy::efficiency`; this is where they come from and go to.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use shoal_deploy::efficiency;

#[derive(clap::Args)]
#[command(after_help = examples())]
pub(crate) struct EfficiencyArgs {
    /// The job's id: its record is read with sacct (SLURM) or, where
    /// there is no sacct, qacct -j (Grid Engine).
    job: Option<String>,
    /// Read `qacct -j JOB` output from this file (- for standard input).
    #[arg(long, conflicts_with_all = ["job", "sacct"])]
    qacct: Option<PathBuf>,
    /// Read `sacct -P --format=…` output (with its header line) from this
    /// file (- for standard input).
    #[arg(long, conflicts_with_all = ["job", "qacct"])]
    sacct: Option<PathBuf>,
}

pub(crate) fn run(args: &EfficiencyArgs) -> anyhow::Result<()> {
    let jobs = match (&args.job, &args.qacct, &args.sacct) {
        (_, Some(file), _) => efficiency::parse_qacct(&read_input(file)?)?,
        (_, _, Some(file)) => efficiency::parse_sacct(&read_input(file)?)?,
        (Some(job), None, None) => efficiency::from_accounting(job)?,
        (None, None, None) => bail!("give a job id, or saved accounting output with --qacct FILE or --sacct FILE"),
    };
    for (k, job) in jobs.iter().enumerate() {
        if k > 0 {
            println!();
        }
        print!("{}", efficiency::report(job));
    }
    Ok(())
}

fn examples() -> String {
    format!(
        "Examples:\n  \
         shoal efficiency 3524046                  # runs sacct, or qacct where there is no sacct\n  \
         qacct -j 3524046 | shoal efficiency --qacct -\n  \
         sacct -P -j 123 --format={} > job.txt; shoal efficiency --sacct job.txt",
        efficiency::SACCT_FORMAT
    )
}

fn read_input(path: &PathBuf) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("cannot read standard input")?;
        return Ok(text);
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}
