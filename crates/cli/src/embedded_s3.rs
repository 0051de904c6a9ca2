//! An S3 endpoint served in-process over a local folder, for `svalbard dev` without
//! `S3_ENDPOINT`: the worker still speaks S3 through aws-sdk-s3, one code path everywhere.
//!
//! The folder store names a metadata file after the whole base64-encoded key, which overflows
//! the 255-byte file-name limit for Svalbard's UUID-laden keys; keys are therefore stored in a
//! compact spelling (well-known folder names abbreviated, UUIDs in base64) and translated back
//! in listings, so clients see the real keys.

use std::path::Path;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::dto::{
    AbortMultipartUploadInput, AbortMultipartUploadOutput, CompleteMultipartUploadInput, CompleteMultipartUploadOutput,
    CreateMultipartUploadInput, CreateMultipartUploadOutput, DeleteObjectInput, DeleteObjectOutput, GetObjectInput,
    GetObjectOutput, HeadBucketInput, HeadBucketOutput, HeadObjectInput, HeadObjectOutput, ListObjectsV2Input,
    ListObjectsV2Output, PutObjectInput, PutObjectOutput, UploadPartInput, UploadPartOutput,
};
use s3s::service::S3ServiceBuilder;
use s3s::{S3, S3Request, S3Response, S3Result};
use tokio::net::TcpListener;

const FOLDERS: &[(&str, &str)] = &[
    ("tenants", "~t"),
    ("projects", "~p"),
    ("planets", "~x"),
    ("backups", "~b"),
];

fn compact(key: &str) -> String {
    use base64::Engine as _;
    key.split('/')
        .map(|seg| {
            if let Some((_, short)) = FOLDERS.iter().find(|(long, _)| *long == seg) {
                (*short).to_owned()
            } else if let Ok(id) = uuid::Uuid::parse_str(seg).map(|u| u.into_bytes())
                && seg.len() == 36
            {
                format!("~{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id))
            } else {
                seg.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn expand(key: &str) -> String {
    use base64::Engine as _;
    key.split('/')
        .map(|seg| {
            if let Some((long, _)) = FOLDERS.iter().find(|(_, short)| *short == seg) {
                return (*long).to_owned();
            }
            if let Some(b64) = seg.strip_prefix('~')
                && let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64)
                && let Ok(id) = uuid::Uuid::from_slice(&bytes)
            {
                return id.hyphenated().to_string();
            }
            seg.to_owned()
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The folder store behind compact keys.
struct Compact(s3s_fs::FileSystem);

/// The trait impl, with the operations that address one object by key generated alike.
macro_rules! compact_impl {
    ($($method:ident($input:ty) -> $output:ty;)+ { $($rest:tt)* }) => {
        #[async_trait::async_trait]
        impl S3 for Compact {
            $(
                async fn $method(&self, mut req: S3Request<$input>) -> S3Result<S3Response<$output>> {
                    req.input.key = compact(&req.input.key);
                    self.0.$method(req).await
                }
            )+
            $($rest)*
        }
    };
}

compact_impl! {
        abort_multipart_upload(AbortMultipartUploadInput) -> AbortMultipartUploadOutput;
        complete_multipart_upload(CompleteMultipartUploadInput) -> CompleteMultipartUploadOutput;
        create_multipart_upload(CreateMultipartUploadInput) -> CreateMultipartUploadOutput;
        delete_object(DeleteObjectInput) -> DeleteObjectOutput;
        get_object(GetObjectInput) -> GetObjectOutput;
        head_object(HeadObjectInput) -> HeadObjectOutput;
        put_object(PutObjectInput) -> PutObjectOutput;
        upload_part(UploadPartInput) -> UploadPartOutput;
    {
    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        self.0.head_bucket(req).await
    }

    async fn list_objects_v2(&self, mut req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        req.input.prefix = req.input.prefix.map(|p| compact(&p));
        let mut res = self.0.list_objects_v2(req).await?;
        res.output.prefix = res.output.prefix.map(|p| expand(&p));
        for object in res.output.contents.iter_mut().flatten() {
            object.key = object.key.as_deref().map(expand);
        }
        Ok(res)
    }
    }
}

/// Serves `root` (one folder per bucket, `bucket` created) on a free loopback port; returns the
/// endpoint URL.
pub async fn start(root: &Path, bucket: &str, access_key: &str, secret_key: &str) -> anyhow::Result<String> {
    std::fs::create_dir_all(root.join(bucket))?;
    let fs = s3s_fs::FileSystem::new(root).map_err(|e| anyhow::anyhow!("embedded S3 store: {e:?}"))?;
    let mut builder = S3ServiceBuilder::new(Compact(fs));
    builder.set_auth(SimpleAuth::from_single(access_key, secret_key));
    let service = builder.build();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let http = ConnBuilder::new(TokioExecutor::new());
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let conn = http
                .serve_connection(TokioIo::new(socket), service.clone())
                .into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    });
    Ok(endpoint)
}

#[cfg(test)]
mod tests {
    use super::{compact, expand};

    #[test]
    fn compact_keys_round_trip_and_keep_prefixes() {
        let key = "tenants/01a2086c-97e1-72c8-b008-bfc60c27b0b7/projects/01a2086c-adb9-7059-a5fd-6d442ca10c0c/\
                   planets/01a2086c-ade4-77f3-9888-c5927d7e3802/backups/01a2086c-ae13-7385-a269-e9cc5f30836c/archive-1.svb.zst";
        let key = key.replace(' ', "");
        let short = compact(&key);
        assert!(short.len() < 130, "{short}");
        assert_eq!(expand(&short), key);
        let prefix = &key[..key.rfind('/').unwrap() + 1];
        assert!(short.starts_with(&compact(prefix)));
        assert_eq!(expand(&compact("plain/key.json")), "plain/key.json");
    }
}
