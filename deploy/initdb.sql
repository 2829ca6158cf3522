-- The three databases of a DIL deployment (run once by the postgres container on an empty data folder).
CREATE DATABASE dil_ledger;
CREATE DATABASE dil_prefect;
CREATE DATABASE dil_mlflow;
