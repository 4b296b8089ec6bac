"""The documented Flask token endpoint (Sentifyd's "Secure Avatar Access" page), copied as is.

Only the configuration is added: ``SENTIFYD_BACKEND`` and ``AVATAR_API_KEY`` come from the
environment (the benchmark points them at the stand-in Sentifyd). Served the usual way:
``gunicorn --workers 5 --worker-class sync flask_snippet:app`` ((2 x cores) + 1 sync workers,
gunicorn's documented starting point, on this 2-core machine).
"""

import os

import requests
from flask import Blueprint, Flask, current_app, jsonify

blueprint = Blueprint("sentifyd", __name__)


@blueprint.route("/request_tokens", methods=["GET"])
def request_tokens():
    sentifyd_backend_url = current_app.config["SENTIFYD_BACKEND"] + "/api/login"
    avatar_api_key = current_app.config["AVATAR_API_KEY"]
    payload = {"avatar_api_key": avatar_api_key}
    try:
        response = requests.post(sentifyd_backend_url, json=payload)
        if response.status_code != 200:
            return jsonify(
                {"error": "Authentication failed", "details": response.json()}
            ), response.status_code
        data = response.json()["data"]
        frontend_payload = {
            "tokens": {
                "accessToken": data["access_token"],
                "refreshToken": data["refresh_token"],
            },
            "avatarParameters": data["avatar_params"],
        }
        return jsonify(frontend_payload), 200
    except Exception as e:  # noqa: F841 - as documented
        current_app.logger.exception("Error while requesting Sentifyd tokens")
        return jsonify({"error": "Internal server error"}), 500


app = Flask(__name__)
app.config["SENTIFYD_BACKEND"] = os.environ["SENTIFYD_BACKEND"]
app.config["AVATAR_API_KEY"] = os.environ["AVATAR_API_KEY"]
app.register_blueprint(blueprint)
