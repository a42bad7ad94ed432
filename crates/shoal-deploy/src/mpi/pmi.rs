//! A PMI-1 client: the text protocol an MPI launcher speaks on the socket
//! it hands each rank as `PMI_FD` (MPICH's Hydra `mpiexec`, Intel MPI,
//! SLURM's `srun --mpi=pmi2`). shoal needs three of its commands: put a
//! value in the job's key-value space, wait at a barrier of every rank,
//! and get a value. No MPI library is linked; the protocol is lines of
//! `key=value` words.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

/// One rank's connection to its launcher's PMI server.
pub(crate) struct Pmi<S: std::io::Read + Write> {
    reader: BufReader<S>,
    kvs: String,
}

/// A PMI exchange that failed: the launcher's socket, or an answer that
/// is not what PMI-1 says.
#[derive(Debug, thiserror::Error)]
pub enum PmiError {
    /// `PMI_FD` does not name an open socket of this process.
    #[error("PMI_FD={0:?} is not an open socket of this process")]
    BadFd(String),
    /// Reading or writing the socket failed.
    #[error("talking to the launcher's PMI server: {0}")]
    Io(#[from] std::io::Error),
    /// The server answered something else than the command's answer.
    #[error("the launcher's PMI server answered {answer:?} to `{command}`")]
    Unexpected {
        /// The command sent (its first word).
        command: String,
        /// The answer's line.
        answer: String,
    },
}

impl Pmi<UnixStream> {
    /// Takes the socket named by `PMI_FD` (its text) and says hello.
    pub(crate) fn from_fd(fd: &str) -> Result<Pmi<UnixStream>, PmiError> {
        use std::os::fd::FromRawFd;
        let number: i32 = fd.trim().parse().map_err(|_| PmiError::BadFd(fd.to_string()))?;
        // The launcher leaves the socket open across `exec`; nothing else in
        // this process knows the number, so taking ownership of it is sound
        // once the kernel confirms it is an open socket.
        let target = std::fs::read_link(format!("/proc/self/fd/{number}")).map_err(|_| PmiError::BadFd(fd.into()))?;
        if !target.to_string_lossy().starts_with("socket:") {
            return Err(PmiError::BadFd(fd.to_string()));
        }
        // SAFETY: `number` is an open socket (checked above) that no other
        // object of this process owns.
        let stream = unsafe { UnixStream::from_raw_fd(number) };
        Pmi::start(stream)
    }
}

impl<S: std::io::Read + Write> Pmi<S> {
    /// Says hello over `stream` and learns the job's key-value space.
    pub(crate) fn start(stream: S) -> Result<Pmi<S>, PmiError> {
        let mut pmi = Pmi { reader: BufReader::new(stream), kvs: String::new() };
        pmi.ask("init pmi_version=1 pmi_subversion=1", "response_to_init")?;
        let answer = pmi.ask("get_my_kvsname", "my_kvsname")?;
        pmi.kvs = word(&answer, "kvsname").unwrap_or_default().to_string();
        Ok(pmi)
    }

    /// Puts `value` under `key` in the job's space (visible to every rank
    /// after the next barrier).
    pub(crate) fn put(&mut self, key: &str, value: &str) -> Result<(), PmiError> {
        let command = format!("put kvsname={} key={key} value={value}", self.kvs);
        self.ask(&command, "put_result").map(drop)
    }

    /// Waits until every rank of the job has reached the barrier.
    pub(crate) fn barrier(&mut self) -> Result<(), PmiError> {
        self.ask("barrier_in", "barrier_out").map(drop)
    }

    /// The value under `key`, if some rank put one before the last barrier.
    pub(crate) fn get(&mut self, key: &str) -> Result<Option<String>, PmiError> {
        let command = format!("get kvsname={} key={key}", self.kvs);
        let answer = self.ask_any(&command, "get_result")?;
        Ok(if rc(&answer) == 0 { word(&answer, "value").map(str::to_string) } else { None })
    }

    /// Says goodbye: the launcher then treats this rank's exit as normal.
    pub(crate) fn finalize(mut self) -> Result<(), PmiError> {
        self.ask("finalize", "finalize_ack").map(drop)
    }

    /// Sends `cmd=<command>` and reads the answer, which must be `expected`
    /// with a zero (or absent) `rc`.
    fn ask(&mut self, command: &str, expected: &str) -> Result<String, PmiError> {
        let answer = self.ask_any(command, expected)?;
        if rc(&answer) != 0 {
            return Err(self.unexpected(command, answer));
        }
        Ok(answer)
    }

    /// Sends `cmd=<command>` and reads an answer that must be `expected`,
    /// whatever its `rc`.
    fn ask_any(&mut self, command: &str, expected: &str) -> Result<String, PmiError> {
        let stream = self.reader.get_mut();
        stream.write_all(format!("cmd={command}\n").as_bytes())?;
        stream.flush()?;
        let mut answer = String::new();
        if self.reader.read_line(&mut answer)? == 0 {
            return Err(self.unexpected(command, "end of stream".into()));
        }
        let answer = answer.trim_end().to_string();
        if word(&answer, "cmd") != Some(expected) {
            return Err(self.unexpected(command, answer));
        }
        Ok(answer)
    }

    fn unexpected(&self, command: &str, answer: String) -> PmiError {
        let command = command.split(' ').next().unwrap_or(command).to_string();
        PmiError::Unexpected { command, answer }
    }
}

/// The value of `key` among an answer's `key=value` words.
fn word<'a>(answer: &'a str, key: &str) -> Option<&'a str> {
    answer.split(' ').find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// An answer's return code; absent means success (Hydra leaves it out of
/// some answers).
fn rc(answer: &str) -> i64 {
    word(answer, "rc").map_or(0, |rc| rc.parse().unwrap_or(-1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A PMI-1 server for `ranks` clients, as Hydra answers: a barrier
    /// releases when every client has entered it.
    fn serve(streams: Vec<UnixStream>) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let mut kvs: HashMap<String, String> = HashMap::new();
            let mut readers: Vec<BufReader<UnixStream>> = streams.into_iter().map(BufReader::new).collect();
            let mut done = vec![false; readers.len()];
            // Each client in turn until it waits at a barrier or says goodbye;
            // then the barrier is released for all.
            while done.iter().any(|d| !d) {
                let mut waiting = Vec::new();
                for (i, reader) in readers.iter_mut().enumerate() {
                    if done[i] {
                        continue;
                    }
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).expect("read") == 0 {
                            done[i] = true;
                            break;
                        }
                        let line = line.trim_end();
                        let answer = match word(line, "cmd").expect("a command") {
                            "init" => "cmd=response_to_init pmi_version=1 pmi_subversion=1 rc=0".to_string(),
                            "get_my_kvsname" => "cmd=my_kvsname kvsname=kvs_7_0 rc=0".to_string(),
                            "put" => {
                                assert_eq!(word(line, "kvsname"), Some("kvs_7_0"));
                                let key = word(line, "key").expect("key").to_string();
                                kvs.insert(key, word(line, "value").expect("value").to_string());
                                "cmd=put_result rc=0 msg=success".to_string()
                            }
                            "get" => match kvs.get(word(line, "key").expect("key")) {
                                Some(v) => format!("cmd=get_result rc=0 msg=success value={v}"),
                                None => "cmd=get_result rc=-1 msg=key_not_found".to_string(),
                            },
                            "barrier_in" => {
                                waiting.push(i);
                                break;
                            }
                            "finalize" => {
                                reader.get_mut().write_all(b"cmd=finalize_ack\n").expect("write");
                                done[i] = true;
                                break;
                            }
                            other => panic!("unknown command {other}"),
                        };
                        reader.get_mut().write_all(format!("{answer}\n").as_bytes()).expect("write");
                    }
                }
                for i in waiting {
                    readers[i].get_mut().write_all(b"cmd=barrier_out\n").expect("write");
                }
            }
        })
    }

    #[test]
    fn a_value_put_before_the_barrier_reaches_every_rank() {
        let (servers, clients): (Vec<_>, Vec<_>) = (0..3).map(|_| UnixStream::pair().expect("socket pair")).unzip();
        let server = serve(servers);
        let ranks: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(rank, stream)| {
                std::thread::spawn(move || {
                    let mut pmi = Pmi::start(stream).expect("hello");
                    if rank == 0 {
                        pmi.put("shoal-scheduler", "tcp://10.0.0.1:4000").expect("put");
                    }
                    pmi.barrier().expect("barrier");
                    let got = pmi.get("shoal-scheduler").expect("get");
                    let missing = pmi.get("nothing").expect("get");
                    pmi.finalize().expect("goodbye");
                    (got, missing)
                })
            })
            .collect();
        for rank in ranks {
            assert_eq!(rank.join().expect("rank"), (Some("tcp://10.0.0.1:4000".to_string()), None));
        }
        server.join().expect("server");
    }

    #[test]
    fn an_answer_out_of_protocol_is_an_error_naming_the_command() {
        let (mut server, client) = UnixStream::pair().expect("socket pair");
        server.write_all(b"cmd=response_to_init rc=0\ncmd=my_kvsname kvsname=k rc=0\ncmd=nonsense\n").expect("write");
        let mut pmi = Pmi::start(client).expect("hello");
        let err = pmi.barrier().expect_err("a wrong answer");
        assert_eq!(err.to_string(), "the launcher's PMI server answered \"cmd=nonsense\" to `barrier_in`");
        drop(server);
        let err = pmi.put("k", "v").expect_err("a closed server");
        assert!(err.to_string().contains("end of stream") || err.to_string().contains("PMI server"), "{err}");
    }

    #[test]
    fn a_bad_fd_is_named() {
        let err = Pmi::from_fd("banana").err().expect("not a number");
        assert_eq!(err.to_string(), "PMI_FD=\"banana\" is not an open socket of this process");
        assert!(Pmi::from_fd("987654").is_err());
    }
}
