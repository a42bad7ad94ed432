#!/usr/bin/env bash
# Single-node Son of Grid Engine 8.1.9 (Debian 12 "gridengine-*") on localhost, as root, no systemd,
# for the job-queue tests (from the project's shared HPC recipes; idempotent).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
H=$(hostname)
# 1. install, pre-answering debconf so postinst creates the cell "default" with this host as master
if ! command -v qconf >/dev/null; then
  printf '%s\n' \
    "gridengine-common shared/gridengineconfig boolean true" \
    "gridengine-common shared/gridenginecell string default" \
    "gridengine-common shared/gridenginemaster string $H" | debconf-set-selections
# Keep package postinst scripts from auto-starting daemons (Docker-style policy-rc.d); we start them ourselves.
OWN_POLICY=0
if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; OWN_POLICY=1; trap 'rm -f /usr/sbin/policy-rc.d' EXIT; fi
  apt-get install -y --no-install-recommends gridengine-master gridengine-exec gridengine-client
if [ "$OWN_POLICY" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
# 2. hostname fix: /etc/hosts maps 127.0.0.1 -> "localhost" first, so SGE's reverse lookup says
#    "localhost" while clients call themselves "$H" => "access denied". Alias them together.
echo "$H localhost" > $SGE_ROOT/$SGE_CELL/common/host_aliases
echo "$H" > $SGE_ROOT/$SGE_CELL/common/act_qmaster
# 3. start qmaster (daemonizes, drops to sgeadmin)
pgrep -x sge_qmaster >/dev/null || /usr/sbin/sge_qmaster
for i in $(seq 100); do qstat >/dev/null 2>&1 && break; sleep 0.2; done
qconf -am root >/dev/null 2>&1 || true
qconf -ah "$H" >/dev/null 2>&1 || true
qconf -as "$H" >/dev/null 2>&1 || true
# 4. global config: allow root jobs (min_uid/min_gid default 1000); fast scheduler
W=$(mktemp -d)
qconf -sconf global | sed -e 's/^min_uid .*/min_uid 0/' -e 's/^min_gid .*/min_gid 0/' -e 's/flush_time=[0-9:]*/flush_time=00:00:01/' > $W/global
(cd $W && qconf -Mconf global)
qconf -ssconf | sed -e 's/^schedule_interval .*/schedule_interval 0:0:1/' \
  -e 's/^flush_submit_sec .*/flush_submit_sec 1/' -e 's/^flush_finish_sec .*/flush_finish_sec 1/' > $W/sched
qconf -Msconf $W/sched
# 5. exec daemon on the same host (auto-registers as exec host because $H is an admin host)
mkdir -p /var/spool/gridengine/execd && chown sgeadmin:sgeadmin /var/spool/gridengine/execd
pgrep -x sge_execd >/dev/null || /usr/sbin/sge_execd
# 6. host group, parallel environment "smp", queue all.q with one slot per CPU
NCPU=$(nproc)
printf 'group_name @allhosts\nhostlist %s\n' "$H" > $W/allhosts
qconf -shgrp @allhosts >/dev/null 2>&1 || qconf -Ahgrp $W/allhosts
cat > $W/smp <<PE
pe_name            smp
slots              999
user_lists         NONE
xuser_lists        NONE
start_proc_args    NONE
stop_proc_args     NONE
allocation_rule    \$pe_slots
control_slaves     TRUE
job_is_first_task  TRUE
urgency_slots      min
accounting_summary FALSE
qsort_args         NONE
PE
qconf -sp smp >/dev/null 2>&1 || qconf -Ap $W/smp
cat > $W/qedit.sh <<ED
#!/bin/sh
sed -i -e 's/^hostlist .*/hostlist @allhosts/' -e 's/^slots .*/slots $NCPU/' \
       -e 's|^shell .*|shell /bin/bash|' -e 's/^pe_list .*/pe_list smp/' "\$1"
ED
chmod +x $W/qedit.sh
qconf -sq all.q >/dev/null 2>&1 || EDITOR=$W/qedit.sh qconf -aq all.q
# 7. readiness: queue instance all.q@$H present and not in alarm/unknown/disabled state
for i in $(seq 150); do
  st=$(qstat -f -q all.q 2>/dev/null | awk -v q="all.q@$H" '$1==q {print $6}')
  line=$(qstat -f -q all.q 2>/dev/null | awk -v q="all.q@$H" '$1==q')
  if [ -n "$line" ] && [ -z "$st" ] && ! echo "$line" | grep -q -- '-NA-'; then break; fi
  sleep 0.2
done
rm -rf $W
qstat -f
