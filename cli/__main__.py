from cli.parent_death import die_with_parent

die_with_parent()  # first: a child of `tickstream run` must not outlive it, even starting up

from cli.main import main  # noqa: E402

main()
