"""Schedules: the hourly graph for the hour that just ended."""

from datetime import timedelta

import dagster as dg

from qa_assets.defs.automation.jobs import hourly_graph


@dg.schedule(cron_schedule="10 * * * *", job=hourly_graph, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.STOPPED,
             description="Ten minutes past every hour: the graph for the hour that just ended (files landing "
                         "later reach their hour through the sensors).")
def hourly_graph_schedule(context: dg.ScheduleEvaluationContext):
    hour = context.scheduled_execution_time.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    key = hour.strftime("%Y-%m-%d-%H:%M")
    return dg.RunRequest(run_key=f"scheduled:{key}", partition_key=key)


SCHEDULES = [hourly_graph_schedule]
