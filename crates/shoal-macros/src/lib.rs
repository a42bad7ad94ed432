//! `#[shoal::remote]`: registers a function under a stable name so that
//! other processes of the same program can run it.

mod actor;

use proc_macro::TokenStream;
use quote::quote;
use syn::{FnArg, ItemFn, Pat, ReturnType, parse_macro_input, spanned::Spanned};

/// Registers a plain function as a remote task: its stable name is its Rust
/// path (`my_crate::stats::mean`), its arguments and result travel encoded
/// with serde. The function itself is unchanged and callable as before.
///
/// The function must not be generic, `async`, or a method, and its
/// parameters must be plain names (`x: i64`, not patterns).
#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        let attr = proc_macro2::TokenStream::from(attr);
        return syn::Error::new(attr.span(), "#[shoal::remote] takes no arguments").to_compile_error().into();
    }
    let function = parse_macro_input!(item as ItemFn);
    match expand(&function) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(function: &ItemFn) -> syn::Result<proc_macro2::TokenStream> {
    let sig = &function.sig;
    let refuse = |span: proc_macro2::Span, what: &str| {
        Err(syn::Error::new(span, format!("#[shoal::remote] needs a plain function: {what}")))
    };
    if sig.asyncness.is_some() {
        return refuse(sig.asyncness.span(), "it cannot be async");
    }
    if !sig.generics.params.is_empty() {
        return refuse(sig.generics.span(), "it cannot be generic (a remote function has one stable name)");
    }
    let mut types = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => return refuse(r.span(), "methods cannot be remote; wrap the call in a function"),
            FnArg::Typed(arg) => {
                if !matches!(*arg.pat, Pat::Ident(_)) {
                    return refuse(arg.pat.span(), "each parameter needs a plain name");
                }
                types.push(arg.ty.as_ref().clone());
            }
        }
    }
    if let ReturnType::Default = sig.output {
        // `()` is a fine result; nothing to check.
    }
    let name = &sig.ident;
    let name_text = name.to_string();
    let elements = element_loops(name, &types, &sig.output);
    Ok(quote! {
        #function

        ::shoal::__private::inventory::submit! {
            ::shoal::remote::Registration::new(
                ::core::concat!(::core::module_path!(), "::", #name_text),
                || ::shoal::remote::RemoteFunc::new::<(#(#types,)*), _>(#name) #elements,
            )
        }
    })
}

/// The loops a bag runs the function in (`map`, `filter`, `fold`, …), for
/// functions of one or two parameters. Which loops fit is read from the
/// signature: a `Vec<Z>` result also serves `flat_map`, a `Vec<E>`
/// parameter `reduction` and `map_partitions`.
fn element_loops(name: &syn::Ident, types: &[syn::Type], output: &ReturnType) -> proc_macro2::TokenStream {
    let elements = quote!(::shoal::graph::elements::Elements);
    let returned = match output {
        ReturnType::Type(_, ty) => vec_item(ty),
        ReturnType::Default => None,
    };
    match types {
        [x] => {
            let mut loops = quote!(#elements::unary::<#x, _, _>(#name));
            if let Some(z) = returned {
                loops = quote!(#loops.and(#elements::flat_map_of::<#x, #z, _>(#name)));
            }
            if let Some(e) = vec_item(x) {
                loops = quote!(#loops.and(#elements::partition_of::<#e, _, _>(#name)));
                if let Some(z) = returned {
                    loops = quote!(#loops.and(#elements::map_partitions_of::<#e, #z, _, _>(#name)));
                }
            }
            quote!(.with_elements(#loops))
        }
        [a, b] => quote!(.with_elements(#elements::binary::<#a, #b, _, _>(#name))),
        _ => quote!(),
    }
}

/// `Z` when `ty` is written `Vec<Z>`.
fn vec_item(ty: &syn::Type) -> Option<&syn::Type> {
    let syn::Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Vec" {
        return None;
    }
    match &last.arguments {
        syn::PathArguments::AngleBracketed(args) if args.args.len() == 1 => match args.args.first()? {
            syn::GenericArgument::Type(item) => Some(item),
            _ => None,
        },
        _ => None,
    }
}

/// Marks the program's `main`: a process that a launcher (a `LocalCluster`,
/// `shoal worker`, a job script) started as a worker becomes that worker
/// on entering `main`, and never returns into it; any other process goes
/// on into `main` at once.
///
/// Linking `shoal` already does this before `main` runs (`shoal::init` is
/// called by a constructor, so tests and benchmarks can be workers too);
/// the attribute says it where the program's reader looks, as
/// `shoal::init()` on the first line of `main` would.
#[proc_macro_attribute]
pub fn main(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        let attr = proc_macro2::TokenStream::from(attr);
        return syn::Error::new(attr.span(), "#[shoal::main] takes no arguments").to_compile_error().into();
    }
    let mut function = parse_macro_input!(item as ItemFn);
    if function.sig.asyncness.is_some() {
        let span = function.sig.fn_token.span();
        let message =
            "#[shoal::main] needs a plain `fn main`: put it below an async runtime's attribute (`#[tokio::main]`)";
        return syn::Error::new(span, message).to_compile_error().into();
    }
    function.block.stmts.insert(0, syn::parse_quote!(::shoal::init();));
    quote!(#function).into()
}

/// Makes the type of an `impl` block an actor class: its objects live on
/// a worker (or in this process, on the threads executor), and its public
/// methods with a `&self` or `&mut self` receiver are called by name with
/// futures for their results. Writes `<Type>Handle`, with one method per
/// public method, and, for a constructor named `new`, Ray's
/// `<Type>::remote(args)`. Its public functions that return the type are
/// its constructors, registered as `#[shoal::remote]` functions are, for
/// `client.actor(Type::new, (args,))`. Arguments and results travel with
/// serde.
#[proc_macro_attribute]
pub fn actor(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        let attr = proc_macro2::TokenStream::from(attr);
        return syn::Error::new(attr.span(), "#[shoal::actor] takes no arguments").to_compile_error().into();
    }
    let block = parse_macro_input!(item as syn::ItemImpl);
    match actor::expand(&block) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}
