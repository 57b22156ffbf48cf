"""How busy the machine is: CPU time that other processes use, in cores."""
import os
import time

LOAD_SAMPLE_S = 0.1  # other_cores' sampling interval: 10 clock ticks per core at 100 Hz


class OtherLoad:
    """CPU time that other processes used since construction, in cores (0 on a quiet
    machine, up to the core count). Read from /proc/stat (Linux); elsewhere the load
    average stands in, which counts this process's running threads too."""

    def __init__(self):
        self.start = self._sample()

    def cores(self):
        if self.start is None:
            return os.getloadavg()[0]
        (wall0, busy0, own0), (wall1, busy1, own1) = self.start, self._sample()
        return max(0.0, ((busy1 - busy0) - (own1 - own0)) / (wall1 - wall0))

    @staticmethod
    def _sample():
        """(wall s, CPU-busy s of the whole machine, CPU s of this process) from
        /proc/stat, or None where there is none."""
        try:
            with open("/proc/stat") as stat:
                user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, stat.readline().split()[1:9])
        except OSError:
            return None
        own = os.times()
        busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
        return time.perf_counter(), busy, own.user + own.system


def other_cores(seconds=LOAD_SAMPLE_S):
    """Cores' worth of CPU that other processes use now, sampled over `seconds` (this
    thread sleeps meanwhile)."""
    meter = OtherLoad()
    time.sleep(seconds)
    return meter.cores()
