"""Library modules log; the command-line programs show the package's records on stderr."""
import logging

from langchain_ragr1.logs import PACKAGE_LOGGER, log_to_stderr


def test_log_to_stderr_shows_package_records_once_on_the_current_stderr(capsys):
    log_to_stderr()
    log_to_stderr()  # idempotent: one handler
    logging.getLogger(f"{PACKAGE_LOGGER}.models").info("Merging the SFT adapter (once)")
    logging.getLogger("someone.else").warning("not ours")
    captured = capsys.readouterr()
    assert captured.err.count("Merging the SFT adapter (once)") == 1 and "not ours" not in captured.err
    assert captured.out == ""


def test_quiet_level_drops_info_but_keeps_warnings(capsys):
    log_to_stderr(logging.WARNING)
    try:
        logging.getLogger(f"{PACKAGE_LOGGER}.tuning.metrics").info("step 1/2: reward 0.5")
        logging.getLogger(f"{PACKAGE_LOGGER}.retrievers.factory").warning("rebuilding the store")
        err = capsys.readouterr().err
        assert "step 1/2" not in err and "rebuilding the store" in err
    finally:
        log_to_stderr()
