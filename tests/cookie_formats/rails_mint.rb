# Mint Rails encrypted session cookies with ActiveSupport's own MessageEncryptor and
# KeyGenerator, as ActionDispatch's encrypted cookie jar does. Input (stdin): a JSON list of
# jobs; output (stdout): a JSON list of cookie values as Rack sends them (URL-escaped).
#   {"secret_key_base": "...", "digest": "sha256"|"sha1", "name": "_app_session",
#    "session": {...}, "envelope": "legacy"|"data", "purpose": "cookie._app_session",
#    "expires_in": 60 (optional)}
# "legacy" is the envelope MessageEncryptor writes for the cookie jar ({"_rails": {"message",
# "exp", "pur"}}: the jar hands it a string serialized by cookies_serializer); "data" is the
# envelope of MessageEncryptor 7.1+ serializing JSON itself ({"_rails": {"data", "exp", "pur"}}),
# built here as 7.1's Messages::Metadata does and encrypted by the same MessageEncryptor.
# ActiveSupport before 7.0 (Debian bookworm has 6.1) derives keys with SHA-1 only; for
# "sha256" this runs Rails 7.0's KeyGenerator#generate_key line on the same OpenSSL call.
require "json"
require "time"
require "uri"
require "openssl"
require "active_support"
require "active_support/version"
require "active_support/key_generator"
require "active_support/message_encryptor"
require "active_support/core_ext/numeric/time"

SALT = "authenticated encrypted cookie"

results = JSON.parse($stdin.read).map do |job|
  key_len = ActiveSupport::MessageEncryptor.key_len("aes-256-gcm")
  key =
    if ActiveSupport::VERSION::MAJOR >= 7
      digest = job["digest"] == "sha1" ? OpenSSL::Digest::SHA1 : OpenSSL::Digest::SHA256
      ActiveSupport::KeyGenerator.new(job["secret_key_base"], iterations: 1000, hash_digest_class: digest)
        .generate_key(SALT, key_len)
    elsif job["digest"] == "sha1"
      ActiveSupport::KeyGenerator.new(job["secret_key_base"], iterations: 1000).generate_key(SALT, key_len)
    else
      OpenSSL::PKCS5.pbkdf2_hmac(job["secret_key_base"], SALT, 1000, key_len, OpenSSL::Digest::SHA256.new)
    end
  encryptor = ActiveSupport::MessageEncryptor.new(
    key, cipher: "aes-256-gcm", serializer: ActiveSupport::MessageEncryptor::NullSerializer
  )
  expires_at = job["expires_in"] ? Time.now.utc + job["expires_in"] : nil
  blob =
    if job["envelope"] == "data"
      meta = { "data" => job["session"] }
      meta["exp"] = expires_at.iso8601(3) if expires_at
      meta["pur"] = job["purpose"] if job["purpose"]
      encryptor.encrypt_and_sign(JSON.generate({ "_rails" => meta }))
    else
      encryptor.encrypt_and_sign(JSON.generate(job["session"]), expires_at: expires_at, purpose: job["purpose"])
    end
  URI.encode_www_form_component(blob)
end
$stdout.write(JSON.generate(results))
