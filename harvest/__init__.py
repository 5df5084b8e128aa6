"""Harvest: crawl -> extract -> gate -> dedup -> instruct -> Alpaca JSONL + quality report."""
