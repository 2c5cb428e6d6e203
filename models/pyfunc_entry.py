"""Entry point MLflow loads for the registered recommender ("models from code", no pickle)."""
import mlflow

from models.pyfunc import RecommenderPyfunc

mlflow.models.set_model(RecommenderPyfunc())
